"""A small fake NSD in exactly the Algonauts 2023 challenge layout, with planted ROI structure.

``make_nsd_fixture(data_dir)`` writes ``data_dir/nsd/subjXX/...``:
``training_split/training_images/train-NNNN_nsd-XXXXX.png`` (NNNN = 1-based fMRI row, XXXXX = NSD id),
``training_split/training_fmri/{lh,rh}_training_fmri.npy`` (images x vertices, float32),
``roi_masks/{lh,rh}.<class>_challenge_space.npy`` (vertex labels, 0 = none) and
``roi_masks/mapping_<class>.npy`` (pickled ``{label: name}`` with the release's label numbering),
plus a ``test_split/test_images`` folder without fMRI, as in the release.

The same NSD id gets the same image and the same latent code in every subject; each (class, label) has its own
loading vector, so different ROIs have different RDMs and a given ROI has related RDMs across subjects.
Rows are shuffled by default (the ``train-NNNN`` index, not the NSD id, gives the fMRI row).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES: dict[str, tuple[str, ...]] = {
    "prf-visualrois": ("V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"),
    "floc-bodies": ("EBA", "FBA-1", "FBA-2", "mTL-bodies"),
    "floc-faces": ("OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"),
    "floc-places": ("OPA", "PPA", "RSC"),
    "floc-words": ("OWFA", "VWFA-1", "VWFA-2", "mfs-words", "mTL-words"),
    "streams": ("early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"),
}
LH_ONLY_EMPTY = "aTL-faces"  # present in rh only, in every subject (tests lh+rh concatenation)
LATENT = 8


@dataclass
class NsdFixture:
    """What was written: ``root`` is ``data_dir/nsd``; ``nsd_ids[subj]`` lists NSD ids in fMRI row order."""

    root: Path
    subjects: list[str]
    nsd_ids: dict[str, list[int]]
    shared_ids: list[int]
    vertices: dict[str, tuple[int, int]] = field(default_factory=dict)


def _image(nsd_id: int, seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 1, nsd_id])
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def _labels(rng: np.random.Generator, n_vertices: int, n_labels: int, per_label: int) -> np.ndarray:
    labels = np.zeros(n_vertices, dtype=np.int64)
    labels[: n_labels * per_label] = np.repeat(np.arange(1, n_labels + 1), per_label)
    return rng.permutation(labels)


def make_nsd_fixture(
    data_dir: Path,
    subjects: int = 2,
    images_per_subject: int = 12,
    shared: int = 6,
    partial: int = 2,
    seed: int = 0,
    image_size: int = 32,
    vertices: tuple[int, int] = (40, 46),
    shuffle_rows: bool = True,
    empty_rois: dict[str, list[str]] | None = None,
    test_images: int = 2,
) -> NsdFixture:
    """Write a fake NSD under ``data_dir/nsd``.

    ``shared`` NSD ids are seen by every subject, ``partial`` more by every subject but the last (when there are
    three or more), the rest are unique to one subject. ``empty_rois`` maps ``subjXX`` to ROIs given no vertex.
    """
    assert shared + partial <= images_per_subject
    rng = np.random.default_rng(seed)
    root = Path(data_dir) / "nsd"
    names = [f"subj{i:02d}" for i in range(1, subjects + 1)]
    pool = [
        int(i)
        for i in rng.choice(73000, size=shared + partial + subjects * images_per_subject + test_images, replace=False)
    ]
    shared_ids, partial_ids, rest = pool[:shared], pool[shared : shared + partial], pool[shared + partial :]
    # subject-independent loadings: (class, label) -> latent direction
    loadings = {(c, lab): rng.normal(size=LATENT) for c, rois in CLASSES.items() for lab in range(len(rois) + 1)}
    empty_rois = empty_rois or {}
    out = NsdFixture(root, names, {}, sorted(shared_ids))

    for k, subj in enumerate(names):
        srng = np.random.default_rng([seed, 2, k])
        has_partial = subjects >= 3 and k < subjects - 1
        n_unique = images_per_subject - shared - (partial if has_partial else 0)
        ids = shared_ids + (partial_ids if has_partial else []) + rest[:n_unique]
        rest = rest[n_unique:]
        ids = [int(i) for i in (srng.permutation(ids) if shuffle_rows else sorted(ids))]
        out.nsd_ids[subj] = ids

        img_dir = root / subj / "training_split" / "training_images"
        img_dir.mkdir(parents=True)
        for row, nsd_id in enumerate(ids):
            name = f"train-{row + 1:04d}_nsd-{nsd_id:05d}.png"
            Image.fromarray(_image(nsd_id, seed, image_size)).save(img_dir / name)

        latent = np.stack([np.random.default_rng([seed, 3, i]).normal(size=LATENT) for i in ids])
        n_vert = {"lh": vertices[0] + k, "rh": vertices[1] + 2 * k}
        out.vertices[subj] = (n_vert["lh"], n_vert["rh"])
        masks_dir = root / subj / "roi_masks"
        masks_dir.mkdir(parents=True)
        fmri_dir = root / subj / "training_split" / "training_fmri"
        fmri_dir.mkdir(parents=True)
        for h in ("lh", "rh"):
            weights = srng.normal(scale=0.3, size=(n_vert[h], LATENT))  # vertex-specific part
            for cls, rois in CLASSES.items():
                labels = _labels(srng, n_vert[h], len(rois), per_label=3)
                for roi in empty_rois.get(subj, []) + ([LH_ONLY_EMPTY] if h == "lh" else []):
                    if roi in rois:
                        labels[labels == rois.index(roi) + 1] = 0
                np.save(masks_dir / f"{h}.{cls}_challenge_space.npy", labels)
                weights += np.stack([loadings[cls, int(lab)] for lab in labels])
            noise = srng.normal(scale=0.5, size=(len(ids), n_vert[h]))
            fmri = (latent @ weights.T + noise).astype(np.float32)
            np.save(fmri_dir / f"{h}_training_fmri.npy", fmri)
        for cls, rois in CLASSES.items():
            mapping = {0: "Unknown", **{i + 1: r for i, r in enumerate(rois)}}
            np.save(masks_dir / f"mapping_{cls}.npy", mapping, allow_pickle=True)

        test_dir = root / subj / "test_split" / "test_images"
        test_dir.mkdir(parents=True)
        for t, nsd_id in enumerate(pool[-test_images:] if test_images else []):
            Image.fromarray(_image(nsd_id, seed, image_size)).save(test_dir / f"test-{t + 1:04d}_nsd-{nsd_id:05d}.png")
    return out
