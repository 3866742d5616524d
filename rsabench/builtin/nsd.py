"""Natural Scenes Dataset (NSD) in the Algonauts 2023 challenge layout: ROI RDMs from vertex responses.

Files (under ``<data_dir>/nsd/``, exactly as the Algonauts 2023 release unpacks)::

    subjXX/training_split/training_images/train-0001_nsd-00013.png ...   row 1 of the fMRI arrays, NSD id 13
    subjXX/training_split/training_fmri/{lh,rh}_training_fmri.npy       (images, vertices) float32
    subjXX/roi_masks/{lh,rh}.<class>_challenge_space.npy                 one ROI label per vertex, 0 = none
    subjXX/roi_masks/mapping_<class>.npy                     pickled dict {label: ROI name}, parsed (never unpickled)

Targets. A target is an ROI over *both* hemispheres (lh vertices, then rh vertices). ``rois`` selects them:
comma-separated ROI names (``FFA-1``), class names that expand to their ROIs (``floc-faces``), or unions
joined by ``+`` (``V1v+V1d``, target named ``V1v+V1d``); empty = every ROI of every class. RDMs are
``1 - pearson`` across the ROI's vertices, computed in float64 (equal to scipy ``pdist(..., "correlation")``).

Images. Subjects saw different images; they are matched across subjects by NSD id (the ``nsd-XXXXX`` in the
file name) and a group's image ids are ``nsd-XXXXX`` sorted by NSD id. The file name's ``train-NNNN`` is the
(1-based) row of the fMRI arrays.

- ``images=shared`` (default): one group ``shared`` holding the images every selected subject saw; each
  target is named by its ROI and holds RDMs ``(subjects, 1, n, n)`` in subject order.
- ``images=per-subject``: one group per subject (``subj01`` ...) holding all of that subject's images; targets
  keep the plain ROI name (``FFA-1``) in every group, so ``--target FFA-1`` selects the ROI in every subject,
  and the group names the subject. RDMs are ``(1, 1, n, n)``: with one subject per group there is no
  between-subject noise ceiling.

``max_images`` keeps the first N images of each group by NSD id (0 = all). An ROI with fewer than
``MIN_VERTICES`` vertices (lh+rh) in a subject is skipped when ``rois`` is empty (shared: for all subjects;
reported in ``Dataset.notes``) and is an error when asked for by name. ``max_rdm_gb`` guards memory: RDMs are
float64 and n² grows fast (all ~9,800 images of one subject need 0.77 GB per ROI).

Every fMRI array is memory-mapped; only the selected rows and the needed ROI columns are read, once.
Images are read lazily (PIL), as uint8 ``(n, H, W, 3)``; all must share one size (the release's are 425x425).
All images are training images of the challenge, so ``train_groups`` is every group and test images are held
out from them (``test_splits = {}``); the challenge test split has no public fMRI.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from rsabench.dataset import Dataset, LoadedDataSource, StimulusGroup, Target, sha256_file
from rsabench.dataset import data_dir as default_data_dir
from rsabench.errors import DataError, UsageError
from rsabench.matio import read_npy_dict
from rsabench.rsa import correlation_rdm_numpy

NAME = "nsd"
HEMIS = ("lh", "rh")
MIN_VERTICES = 2  # Pearson across vertices needs at least two
IMAGE_RE = re.compile(r"^train-(\d+)_nsd-(\d+)\.png$")
SUBJECT_RE = re.compile(r"^subj(\d{2})$")
INFO_HINT = "see `rsabench data info nsd`"

# ROI classes and names in label order (label i+1 = name i; 0 = "Unknown"), as in the release's mapping files.
ROI_CLASSES: dict[str, tuple[str, ...]] = {
    "prf-visualrois": ("V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"),
    "floc-bodies": ("EBA", "FBA-1", "FBA-2", "mTL-bodies"),
    "floc-faces": ("OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"),
    "floc-places": ("OPA", "PPA", "RSC"),
    "floc-words": ("OWFA", "VWFA-1", "VWFA-2", "mfs-words", "mTL-words"),
    "streams": ("early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"),
}
ROI_CLASS_OF: dict[str, str] = {roi: cls for cls, rois in ROI_CLASSES.items() for roi in rois}

CITATION = (
    "Allen EJ, St-Yves G, Wu Y, Breedlove JL, Prince JS, Dowdle LT, Nau M, Caron B, Pestilli F, Charest I, "
    "Hutchinson JB, Naselaris T, Kay K (2022). A massive 7T fMRI dataset to bridge cognitive neuroscience and "
    "artificial intelligence. Nature Neuroscience 25(1):116-126. doi:10.1038/s41593-021-00962-x\n"
    "Gifford AT, Lahner B, Saba-Sadiya S, Vilas MG, Lascelles A, Oliva A, Kay K, Roig G, Cichy RM (2023). "
    "The Algonauts Project 2023 Challenge: How the Human Brain Makes Sense of Natural Scenes. "
    "arXiv:2301.03198"
)
LICENSE = (
    "NSD Terms and Conditions (https://cvnlab.slite.page/p/IB6BSeW_7o/Terms-and-Conditions): agree to them "
    "before use; images from COCO (Lin et al. 2014) under the COCO terms of use. Not redistributed by rsabench."
)
URL = "https://algonautsproject.com/2023/challenge.html"

REQUIRED_FILES: tuple[tuple[str, str], ...] = (
    (
        "subjXX/training_split/training_images/train-NNNN_nsd-XXXXX.png",
        "training images; NNNN = 1-based fMRI row, XXXXX = NSD image id",
    ),
    ("subjXX/training_split/training_fmri/lh_training_fmri.npy", "left-hemisphere responses, (images, vertices)"),
    ("subjXX/training_split/training_fmri/rh_training_fmri.npy", "right-hemisphere responses, (images, vertices)"),
    *(
        (f"subjXX/roi_masks/{h}.{cls}_challenge_space.npy", f"{h} vertex labels of the {cls} ROIs (0 = none)")
        for cls in ROI_CLASSES
        for h in HEMIS
    ),
    *((f"subjXX/roi_masks/mapping_{cls}.npy", f"pickled dict label -> {cls} ROI name") for cls in ROI_CLASSES),
)


def describe() -> dict:
    """What ``rsabench data info nsd`` shows: files needed (relative to ``<data_dir>/nsd``), citation, licence."""
    return {
        "name": NAME,
        "title": "Natural Scenes Dataset, Algonauts 2023 challenge release (8 subjects, 7T fMRI, COCO images)",
        "directory": NAME,
        "required_files": [{"path": p, "description": d} for p, d in REQUIRED_FILES],
        "subjects": [f"subj{i:02d}" for i in range(1, 9)],
        "url": URL,
        "how_to_get": (
            f"Request the Algonauts 2023 challenge data ({URL}), accept the NSD Terms and Conditions, and unpack "
            "the subjXX folders into <data_dir>/nsd/ (the test_split folders are not needed)."
        ),
        "options": {
            "subjects": "all | comma-separated numbers or names (1,2 or subj01,subj02)",
            "images": "shared (images every selected subject saw) | per-subject (one group per subject)",
            "max_images": "keep the first N images of each group by NSD id (0 = all)",
            "rois": "comma-separated ROI names, class names or '+'-unions (empty = all ROIs)",
            "max_rdm_gb": "refuse to build RDMs larger than this in total (default 8)",
        },
        "citation": CITATION,
        "license": LICENSE,
    }


def missing_files(data_dir: str | Path | None = None) -> list[str]:
    """Required files absent under ``<data_dir>/nsd`` (relative paths; empty = complete)."""
    root = default_data_dir(data_dir) / NAME
    subjects = _subject_dirs(root) if root.is_dir() else []
    if not subjects:
        return [p.replace("subjXX", "subj01") for p, _ in REQUIRED_FILES]
    missing = []
    for subj in subjects:
        for pattern, _ in REQUIRED_FILES:
            rel = pattern.replace("subjXX", subj.name)
            if "NNNN" in rel:
                if not any((subj / "training_split" / "training_images").glob("train-*_nsd-*.png")):
                    missing.append(rel)
            elif not (root / rel).is_file():
                missing.append(rel)
    return missing


# --------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class RoiSpec:
    """A target: the union of named ROIs (one name for a plain ROI)."""

    name: str
    parts: tuple[str, ...]
    explicit: bool

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(ROI_CLASS_OF[p] for p in self.parts))


def _items(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _unknown_roi(name: str) -> UsageError:
    close = difflib.get_close_matches(name, [*ROI_CLASS_OF, *ROI_CLASSES], n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UsageError(
        f"nsd: unknown ROI {name!r} in option rois{hint} "
        f"(expected ROI names such as FFA-1, classes {', '.join(ROI_CLASSES)}, or unions like V1v+V1d)"
    )


def parse_rois(value: object) -> list[RoiSpec]:
    """``rois`` option → target specs (empty = every ROI of every class, not explicit)."""
    items = _items(value)
    if not items:
        return [RoiSpec(r, (r,), False) for rois in ROI_CLASSES.values() for r in rois]
    specs: list[RoiSpec] = []
    for item in items:
        if item in ROI_CLASSES:
            specs.extend(RoiSpec(r, (r,), True) for r in ROI_CLASSES[item])
            continue
        parts = tuple(dict.fromkeys(p.strip() for p in item.split("+") if p.strip()))
        for p in parts:
            if p not in ROI_CLASS_OF:
                raise _unknown_roi(p)
        specs.append(RoiSpec("+".join(parts), parts, True))
    unique = {s.name: s for s in specs}
    return list(unique.values())


def _parse_subjects(value: object, available: list[str], root: Path) -> list[str]:
    items = _items(value)
    if not items or items == ["all"]:
        return available
    chosen = []
    for item in items:
        name = f"subj{int(item):02d}" if item.isdigit() else item
        if not SUBJECT_RE.match(name):
            raise UsageError(f"nsd: bad subject {item!r} in option subjects (expected all, 1,2 or subj01,subj02)")
        if name not in available:
            raise DataError(f"nsd: subject {name} not found under {root} (found: {', '.join(available)}); {INFO_HINT}")
        if name not in chosen:
            chosen.append(name)
    return sorted(chosen)


def _parse_int(value: object, option: str) -> int:
    try:
        out = int(str(value).strip())
    except ValueError:
        raise UsageError(f"nsd: option {option} must be a non-negative integer, got {value!r}") from None
    if out < 0:
        raise UsageError(f"nsd: option {option} must be a non-negative integer, got {value!r}")
    return out


def _parse_float(value: object, option: str) -> float:
    try:
        out = float(str(value).strip())
    except ValueError:
        raise UsageError(f"nsd: option {option} must be a positive number, got {value!r}") from None
    if not out > 0:
        raise UsageError(f"nsd: option {option} must be a positive number, got {value!r}")
    return out


# --------------------------------------------------------------------------------------------- files


def _subject_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and SUBJECT_RE.match(p.name))


@dataclass
class SubjectImages:
    """One subject's training images: NSD id → fMRI row (0-based) and file."""

    subject: str
    rows: dict[int, int]
    files: dict[int, Path]


def _scan_images(subj_dir: Path) -> SubjectImages:
    img_dir = subj_dir / "training_split" / "training_images"
    if not img_dir.is_dir():
        raise DataError(
            f"nsd: missing folder {img_dir}: expected training images train-NNNN_nsd-XXXXX.png; {INFO_HINT}"
        )
    rows: dict[int, int] = {}
    files: dict[int, Path] = {}
    seen_rows: set[int] = set()
    for path in sorted(img_dir.glob("*.png")):
        m = IMAGE_RE.match(path.name)
        if not m:
            raise DataError(f"nsd: unexpected image file {path}: expected names like train-0001_nsd-00013.png")
        row, nsd_id = int(m.group(1)) - 1, int(m.group(2))
        if nsd_id in rows:
            raise DataError(f"nsd: NSD id {nsd_id} appears twice in {img_dir} ({files[nsd_id].name}, {path.name})")
        if row < 0 or row in seen_rows:
            raise DataError(f"nsd: bad or repeated row index in image file name {path}")
        seen_rows.add(row)
        rows[nsd_id], files[nsd_id] = row, path
    if not rows:
        raise DataError(f"nsd: no images in {img_dir}: expected train-NNNN_nsd-XXXXX.png files; {INFO_HINT}")
    if max(seen_rows) != len(seen_rows) - 1:
        raise DataError(
            f"nsd: image rows in {img_dir} are not 1..{len(seen_rows)} (highest is train-{max(seen_rows) + 1:04d});"
            " is the folder complete?"
        )
    return SubjectImages(subj_dir.name, rows, files)


def _open_fmri(path: Path, n_images: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"nsd: missing file {path}: expected an (images, vertices) float32 .npy array; {INFO_HINT}")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"nsd: cannot read {path} as a .npy array ({exc})") from None
    if arr.ndim != 2:
        raise DataError(f"nsd: {path} has shape {arr.shape}: expected (images, vertices)")
    if arr.shape[0] != n_images:
        raise DataError(
            f"nsd: {path} has {arr.shape[0]} rows but {path.parents[1] / 'training_images'} has {n_images} images"
        )
    return arr


def _load_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"nsd: missing file {path}: expected {what}; {INFO_HINT}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"nsd: cannot read {path} ({exc}): expected {what}") from None


def _load_mapping(path: Path) -> dict[str, int]:
    """ROI name → label from ``mapping_<class>.npy`` (a pickled ``{label: name}`` dict, read without
    unpickling: see :func:`rsabench.matio.read_npy_dict`)."""
    if not path.is_file():
        raise DataError(f"nsd: missing file {path}: expected a pickled dict {{label: ROI name}}; {INFO_HINT}")
    try:
        mapping = read_npy_dict(path)
    except DataError as exc:
        raise DataError(f"nsd: {exc}") from None
    if not all(isinstance(k, int) and not isinstance(k, bool) and isinstance(v, str) for k, v in mapping.items()):
        raise DataError(f"nsd: {path} does not hold a dict {{integer label: ROI name}}")
    return {name: label for label, name in mapping.items()}


@dataclass
class SubjectRois:
    """Per-hemisphere vertex indices of each ROI spec for one subject."""

    columns: dict[str, dict[str, np.ndarray]]  # spec name → hemi → sorted vertex indices
    checksums: dict[str, str]


def _subject_rois(root: Path, subj: str, specs: list[RoiSpec], n_vertices: dict[str, int]) -> SubjectRois:
    masks_dir = root / subj / "roi_masks"
    classes = list(dict.fromkeys(c for s in specs for c in s.classes))
    labels: dict[tuple[str, str], np.ndarray] = {}
    mappings: dict[str, dict[str, int]] = {}
    checksums: dict[str, str] = {}
    for cls in classes:
        path = masks_dir / f"mapping_{cls}.npy"
        mappings[cls] = _load_mapping(path)
        checksums[f"{subj}/roi_masks/{path.name}"] = sha256_file(path)
        for h in HEMIS:
            path = masks_dir / f"{h}.{cls}_challenge_space.npy"
            mask = _load_npy(path, f"{h} vertex labels of the {cls} ROIs, one per fMRI vertex")
            if mask.ndim != 1 or mask.shape[0] != n_vertices[h]:
                fmri = root / subj / "training_split" / "training_fmri" / f"{h}_training_fmri.npy"
                raise DataError(
                    f"nsd: {path} has {mask.shape[0] if mask.ndim == 1 else mask.shape} vertices but "
                    f"{fmri} has {n_vertices[h]}: expected one label per fMRI vertex"
                )
            labels[cls, h] = mask
            checksums[f"{subj}/roi_masks/{path.name}"] = sha256_file(path)
    columns: dict[str, dict[str, np.ndarray]] = {}
    for spec in specs:
        columns[spec.name] = {}
        for h in HEMIS:
            keep = np.zeros(n_vertices[h], dtype=bool)
            for part in spec.parts:
                cls = ROI_CLASS_OF[part]
                if part not in mappings[cls]:
                    raise DataError(
                        f"nsd: {masks_dir / f'mapping_{cls}.npy'} has no ROI {part!r} "
                        f"(has: {', '.join(sorted(mappings[cls]))})"
                    )
                keep |= labels[cls, h] == mappings[cls][part]
            columns[spec.name][h] = np.flatnonzero(keep)
    return SubjectRois(columns, checksums)


def _rdm(x: np.ndarray) -> np.ndarray:
    """``1 - pearson`` between rows, float64 (equals scipy ``pdist(x, "correlation")``); a constant row has
    distance 1 to everything (as ``rsa.correlation_rdm``)."""
    return correlation_rdm_numpy(x, eps=0.0, dtype=np.float64)


def _subject_rdms(
    root: Path, images: SubjectImages, nsd_ids: list[int], specs: list[RoiSpec], out: dict[str, np.ndarray], k: int
) -> tuple[dict[str, int], dict[str, str]]:
    """Write one subject's RDMs (images in order) into ``out[roi][k, 0]``; return vertex counts and checksums.

    An ROI with fewer than ``MIN_VERTICES`` vertices is left unwritten (its count says so).
    """
    subj = images.subject
    fmri_dir = root / subj / "training_split" / "training_fmri"
    n_images = len(images.rows)
    fmri = {h: _open_fmri(fmri_dir / f"{h}_training_fmri.npy", n_images) for h in HEMIS}
    rois = _subject_rois(root, subj, specs, {h: fmri[h].shape[1] for h in HEMIS})
    rows = np.array([images.rows[i] for i in nsd_ids], dtype=np.int64)
    checksums = dict(rois.checksums)
    # read the selected rows x the union of needed columns, once per hemisphere
    blocks: dict[str, np.ndarray] = {}
    positions: dict[str, dict[str, np.ndarray]] = {s.name: {} for s in specs}
    for h in HEMIS:
        union = np.unique(np.concatenate([rois.columns[s.name][h] for s in specs] or [np.zeros(0, np.int64)]))
        block = np.asarray(fmri[h])[np.ix_(rows, union)]
        if not np.all(np.isfinite(block)):
            bad = int(np.count_nonzero(~np.isfinite(block)))
            raise DataError(f"nsd: {fmri_dir / f'{h}_training_fmri.npy'} has {bad} NaN/inf values in the ROI vertices")
        digest = hashlib.sha256(np.ascontiguousarray(block).data).hexdigest()
        checksums[f"{subj}/training_split/training_fmri/{h}_training_fmri.npy[selected]"] = digest
        blocks[h] = block
        for s in specs:
            positions[s.name][h] = np.searchsorted(union, rois.columns[s.name][h])
    names = "\n".join(images.files[i].name for i in nsd_ids)
    checksums[f"{subj}/training_split/training_images[names]"] = hashlib.sha256(names.encode()).hexdigest()
    counts: dict[str, int] = {}
    for s in specs:
        counts[s.name] = sum(len(positions[s.name][h]) for h in HEMIS)
        if counts[s.name] < MIN_VERTICES:
            continue
        x = np.concatenate([blocks[h][:, positions[s.name][h]] for h in HEMIS], axis=1)
        out[s.name][k, 0] = _rdm(x)
    return counts, checksums


def _image_loader(files: list[Path]):
    """Lazily read PNGs as uint8 ``(n, H, W, 3)``; every image must have the size of the first."""

    def load_images() -> np.ndarray:
        from PIL import Image

        out: np.ndarray | None = None
        for k, path in enumerate(files):
            try:
                with Image.open(path) as im:
                    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            except OSError as exc:
                raise DataError(f"nsd: cannot read image {path} ({exc})") from None
            if out is None:
                out = np.empty((len(files), *arr.shape), dtype=np.uint8)
            elif arr.shape != out.shape[1:]:
                raise DataError(
                    f"nsd: image {path} is {arr.shape[1]}x{arr.shape[0]} but {files[0]} is "
                    f"{out.shape[2]}x{out.shape[1]}: expected all images the same size"
                )
            out[k] = arr
        assert out is not None
        return out

    return load_images


# --------------------------------------------------------------------------------------------- load


Selection = dict[str, tuple[list[str], list[int]]]
"""Per group: its subjects and its images' NSD ids (sorted)."""


def _chosen_subjects(root: Path, subjects: object) -> list[str]:
    """The subject folders ``subjects`` selects under ``root`` (DataError when there are none)."""
    expected = "expected subjXX/training_split/{training_images,training_fmri}/ and subjXX/roi_masks/"
    if not root.is_dir():
        raise DataError(f"no NSD data under {root}: {expected}; {INFO_HINT}")
    available = [p.name for p in _subject_dirs(root)]
    if not available:
        raise DataError(f"no NSD subject folders (subj01 ... subj08) under {root}: {expected}; {INFO_HINT}")
    return _parse_subjects(subjects, available, root)


def _select_images(mode: str, chosen: list[str], scans: dict[str, SubjectImages], limit: int) -> Selection:
    """Each group's subjects and images: the images all subjects saw (shared) or each subject's own."""
    if mode == "shared":
        common = set.intersection(*(set(scans[s].rows) for s in chosen))
        selection = {"shared": (chosen, sorted(common))}
    else:
        selection = {s: ([s], sorted(scans[s].rows)) for s in chosen}
    for group, (subs, ids) in selection.items():
        if limit:
            selection[group] = (subs, ids[:limit])
        if len(selection[group][1]) < 3:
            raise DataError(
                f"nsd: group {group!r} has {len(selection[group][1])} images (subjects {', '.join(subs)}); "
                "RDMs need at least 3: choose fewer subjects, images=per-subject, or a larger max_images"
            )
    return selection


def _check_memory(selection: Selection, specs: list[RoiSpec], budget: float) -> None:
    gb = sum(len(subs) * len(specs) * len(ids) ** 2 * 8 for subs, ids in selection.values()) / 1e9
    if gb > budget:
        raise UsageError(
            f"nsd: the requested RDMs need {gb:.1f} GB (> max_rdm_gb={budget:g}): set max_images, fewer rois or "
            "subjects, or raise max_rdm_gb"
        )


@dataclass
class _Parts:
    """What :func:`load` collects group by group."""

    groups: dict[str, StimulusGroup]
    targets: list[Target]
    checksums: dict[str, str]
    files: dict[str, list[Path]]
    skipped: list[str]


def _add_group(
    root: Path,
    group: str,
    subs: list[str],
    ids: list[int],
    scans: dict[str, SubjectImages],
    specs: list[RoiSpec],
    out: _Parts,
) -> None:
    """Group ``group``: its images and one target per ROI spec (ROIs too small in a subject are skipped)."""
    files = [scans[subs[0]].files[i] for i in ids]
    out.files[f"{subs[0]}/training_split/training_images/ (group {group})"] = files
    out.groups[group] = StimulusGroup(group, [f"nsd-{i:05d}" for i in ids], load_images=_image_loader(files))
    n = len(ids)
    stacks = {s.name: np.empty((len(subs), 1, n, n)) for s in specs}
    too_small: dict[str, list[str]] = {}
    for k, subj in enumerate(subs):
        counts, sums = _subject_rdms(root, scans[subj], ids, specs, stacks, k)
        out.checksums.update(sums)
        for s in specs:
            if counts[s.name] >= MIN_VERTICES:
                continue
            if s.explicit:
                raise DataError(
                    f"nsd: ROI {s.name!r} has {counts[s.name]} vertices (lh+rh) in "
                    f"{root / subj / 'roi_masks'}: at least {MIN_VERTICES} are needed"
                )
            too_small.setdefault(s.name, []).append(subj)
    for s in specs:
        stack = stacks.pop(s.name)
        if s.name in too_small:
            out.skipped.append(
                f"ROI {s.name!r} skipped in group {group!r}: fewer than {MIN_VERTICES} vertices (lh+rh) in "
                f"{', '.join(too_small[s.name])}"
            )
            continue
        source = f"{root} ({group}, ROI {s.name}, subjects {', '.join(subs)})"
        out.targets.append(Target(s.name, group, stack, kind="1-pearson", source=source))


def load(
    data_dir: str | Path | None = None,
    subjects: object = "all",
    images: str = "shared",
    max_images: object = 0,
    rois: object = "",
    max_rdm_gb: object = 8.0,
) -> Dataset:
    """NSD (Algonauts 2023 layout) ROI RDMs; see the module docstring for options and naming."""
    mode = str(images).strip().lower()
    if mode not in ("shared", "per-subject"):
        raise UsageError(f"nsd: option images must be 'shared' or 'per-subject', got {images!r}")
    limit = _parse_int(max_images, "max_images")
    budget = _parse_float(max_rdm_gb, "max_rdm_gb")
    specs = parse_rois(rois)

    root = default_data_dir(data_dir) / NAME
    chosen = _chosen_subjects(root, subjects)
    scans = {s: _scan_images(root / s) for s in chosen}
    selection = _select_images(mode, chosen, scans, limit)
    _check_memory(selection, specs, budget)

    parts = _Parts({}, [], {}, {}, [])
    for group, (subs, ids) in selection.items():
        _add_group(root, group, subs, ids, scans, specs, parts)
    if not parts.targets:
        raise DataError(
            f"nsd: no ROI has at least {MIN_VERTICES} vertices in every subject ({'; '.join(parts.skipped)})"
        )
    n_desc = ", ".join(f"{g}: {len(ids)} images" for g, (_, ids) in selection.items())
    description = (
        f"NSD (Algonauts 2023) 7T fMRI ROI RDMs, 1 - Pearson across lh+rh vertices; subjects "
        f"{', '.join(chosen)}; images={mode} ({n_desc})."
    )
    return Dataset(
        name=NAME,
        groups=parts.groups,
        targets=parts.targets,
        train_groups=list(parts.groups),
        test_splits={},
        citation=CITATION,
        license=LICENSE,
        description=description,
        target_normalization="none",
        conventions=("computed",),
        checksums=parts.checksums,
        files=parts.files,
        notes=parts.skipped,
    )


def roi_names(classes: Iterable[str] | None = None) -> list[str]:
    """ROI names of the given classes (all classes by default), in label order."""
    return [r for c in (classes or ROI_CLASSES) for r in ROI_CLASSES[c]]


class NsdData(LoadedDataSource):
    """The data source of ``nsd``: the required files are listed and checked for; no fetcher (terms to accept)."""

    def __init__(self) -> None:
        super().__init__(load)

    def describe(self, data_dir: Path) -> dict:
        missing = missing_files(data_dir)
        return {"looks_in": str(Path(data_dir) / NAME), **describe(), "missing": missing, "present": not missing}

    def verify(self, data_dir: Path, *, checksums: bool = True) -> list[str]:
        missing = missing_files(data_dir)
        if missing:
            return [f"{Path(data_dir) / NAME / rel}: missing" for rel in missing]
        return super().verify(data_dir, checksums=checksums)


DATA = NsdData()
