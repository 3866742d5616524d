"""Algonauts 2019 (Cichy et al. 2019): fMRI (EVC, IT) and MEG (early, late) RDMs of 15 subjects.

Files, under ``<data_dir>/algonauts2019/`` exactly as the official release unpacks::

    Training_Data/92_Image_Set/92images/*.jpg          group "92"   (train)
    Training_Data/92_Image_Set/target_{fmri,meg}.mat
    Training_Data/118_Image_Set/118images/*.jpg        group "118"  (train)
    Training_Data/118_Image_Set/target_{fmri,meg}.mat
    Test_Data/78images/*.jpg                           group "78"   (split "test")
    Test_Data/target_{fmri,meg}.mat
    Test_Data/target_{fmri,meg}_TS2.mat                group "78-ts2" (split "test2", the hidden test set)

Row i of every RDM is image i in sorted file-name order. fMRI files hold ``EVC_RDMs``/``IT_RDMs``
``(subjects, n, n)`` of 1 - Pearson r (target ``rdms`` become ``(subjects, 1, n, n)``); MEG files hold
``MEG_RDMs_early``/``MEG_RDMs_late`` ``(subjects, sessions, n, n)`` of pairwise decoding accuracy in percent
(50 = chance), whose diagonal is undefined and set to 0 here (only the strict upper triangle is used).
MATLAB v7.3 (HDF5) and v5 files are both read (:mod:`rsabench.matio`).

TS2. The release ships the hidden test set's RDMs (78x78) but no stimuli of its own: the challenge scored
the one 78x78 submission made on the 78 test images against both the test set and TS2. rsabench does the
same by default (``ts2_images="78"``: the TS2 group's images are the 78 test images). The release does not
say which stimuli the TS2 recordings used (possibly the twin set of Mohsenzadeh et al. 2019); their mean
RDMs agree only weakly with the test set's (Spearman 0.07 EVC / 0.05 IT, both noisy: upper ceilings R² ≈
0.065). ``ts2_images="none"`` leaves the group without images: scoreable only by ``rsabench score``.

Absent parts (the 118 images and the MEG files are often missing) are reported in ``Dataset.notes`` and the
dataset goes on with what is there; a group with RDMs but no images is kept for ``rsabench score`` and
dropped from training. Images of differing sizes within a group (17 of the 78 test images are 399 or 402
pixels wide) are resized (bicubic) to the group's most common size when loaded.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from rsabench.dataset import Dataset, StimulusGroup, Target
from rsabench.dataset import data_dir as default_data_dir
from rsabench.errors import DataError, UsageError
from rsabench.matio import load_rdm_arrays

RELEASE_DIR = "algonauts2019"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
CITATION = (
    "Cichy RM, Roig G, Andonian A, Dwivedi K, Lahner B, Lascelles A, Mohsenzadeh Y, Ramakrishnan K, Oliva A "
    "(2019). The Algonauts Project: A Platform for Communication between the Sciences of Biological and "
    "Artificial Intelligence. arXiv:1905.05675"
)
LICENSE = "not stated; see the Algonauts 2019 terms (http://algonauts.csail.mit.edu/2019/)"
SOURCE = "the Algonauts 2019 website (http://algonauts.csail.mit.edu/2019/) or its GitHub devkit"


@dataclass(frozen=True)
class GroupLayout:
    """Where one image set's files live inside the release."""

    folder: str
    image_dir: str | None
    suffix: str = ""
    role: str = ""

    def target_file(self, stem: str) -> str:
        return f"{self.folder}/{stem}{self.suffix}.mat"


@dataclass(frozen=True)
class Modality:
    """One track: its dataset name, target file stem and targets (name -> variable)."""

    name: str
    stem: str
    targets: dict[str, str]
    ndim: int
    kind: str
    normalization: str
    description: str


GROUPS: dict[str, GroupLayout] = {
    "92": GroupLayout(
        "Training_Data/92_Image_Set", "Training_Data/92_Image_Set/92images", role="training set, 92 images"
    ),
    "118": GroupLayout(
        "Training_Data/118_Image_Set", "Training_Data/118_Image_Set/118images", role="training set, 118 images"
    ),
    "78": GroupLayout("Test_Data", "Test_Data/78images", role="challenge test set, 78 images"),
    "78-ts2": GroupLayout("Test_Data", None, "_TS2", role="hidden test set TS2, 78x78 RDMs"),
}
TRAIN_GROUPS = ("92", "118")
TEST_SPLITS = {"test": "78", "test2": "78-ts2"}
NAMED_SPLITS = {"train-92": "92", "train-118": "118", "test": "78", "test2": "78-ts2"}

MODALITIES: dict[str, Modality] = {
    "fmri": Modality(
        "algonauts-fmri",
        "target_fmri",
        {"EVC": "EVC_RDMs", "IT": "IT_RDMs"},
        3,
        "1-pearson",
        "none",
        "Algonauts 2019 fMRI track: early visual cortex (EVC) and inferior temporal cortex (IT) RDMs, 15 subjects.",
    ),
    "meg": Modality(
        "algonauts-meg",
        "target_meg",
        {"MEG-early": "MEG_RDMs_early", "MEG-late": "MEG_RDMs_late"},
        4,
        "decoding-accuracy",
        "agrawal",
        "Algonauts 2019 MEG track: pairwise decoding accuracy (%) at 70-90 ms (early) and 140-160 ms (late), "
        "15 subjects x 2 sessions.",
    ),
}
MODALITY_OF = {m.name: key for key, m in MODALITIES.items()}


def modality_for(name: str) -> Modality:
    """The :class:`Modality` of ``algonauts-fmri`` / ``algonauts-meg`` (or ``fmri`` / ``meg``)."""
    key = MODALITY_OF.get(name, name)
    if key not in MODALITIES:
        raise UsageError(f"unknown Algonauts 2019 dataset {name!r} (known: {', '.join(MODALITY_OF)})")
    return MODALITIES[key]


def release_root(data_dir: str | Path | None) -> Path:
    """``<data_dir>/algonauts2019`` (``data_dir`` None: ``RSABENCH_DATA`` or the user cache dir)."""
    return default_data_dir(data_dir) / RELEASE_DIR


def image_files(folder: Path) -> list[Path]:
    """Image files of a folder in sorted file-name order (row order of the RDMs); hidden files ignored."""
    return sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        ),
        key=lambda p: p.name,
    )


def _numbering_hint(files: list[Path], n: int) -> str:
    """For numbered file names (image_01 ... image_92): which numbers are missing or extra."""
    nums = []
    for p in files:
        m = re.search(r"(\d+)$", p.stem)
        if not m:
            return ""
        nums.append(int(m.group(1)))
    have = Counter(nums)
    missing = [i for i in range(1, n + 1) if i not in have]
    extra = sorted({i for i in nums if i < 1 or i > n} | {i for i, c in have.items() if c > 1})
    parts = []
    if missing:
        parts.append("missing number(s) " + ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else ""))
    if extra:
        parts.append(
            "unexpected/duplicate number(s) " + ", ".join(map(str, extra[:10])) + (" ..." if len(extra) > 10 else "")
        )
    return f" ({'; '.join(parts)})" if parts else ""


def check_images(folder: Path, n: int, rdm_file: Path) -> list[Path]:
    """The folder's image files, checked: one per RDM row, each openable (header read only)."""
    files = image_files(folder)
    if len(files) != n:
        word = "missing" if len(files) < n else "extra"
        raise DataError(
            f"{folder}: {len(files)} image files but the RDMs in {rdm_file} are {n}x{n} "
            f"({word} images; one image per RDM row expected){_numbering_hint(files, n)}"
        )
    from PIL import Image

    for p in files:
        try:
            with Image.open(p) as im:
                im.size  # noqa: B018 - parses the header
        except Exception as exc:
            raise DataError(f"{p}: unreadable image ({type(exc).__name__}: {exc})") from None
    return files


def read_images(files: list[Path]) -> np.ndarray:
    """uint8 ``(n, H, W, 3)``; images not of the most common size are resized to it (bicubic)."""
    from PIL import Image

    images = []
    for p in files:
        try:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        except Exception as exc:
            raise DataError(f"{p}: unreadable image ({type(exc).__name__}: {exc})") from None
    size = Counter(im.size for im in images).most_common(1)[0][0]
    return np.stack(
        [np.asarray(im if im.size == size else im.resize(size, Image.BICUBIC), dtype=np.uint8) for im in images]
    )


def _image_loader(files: list[Path]) -> Callable[[], np.ndarray]:
    cache: dict[str, np.ndarray] = {}

    def load_images() -> np.ndarray:
        if "x" not in cache:
            cache["x"] = read_images(files)
        return cache["x"]

    return load_images


def read_target_file(path: Path, modality: Modality) -> dict[str, np.ndarray]:
    """A target file's RDMs per target name, as ``(subjects, repeats, n, n)``; checked invariants."""
    keys = list(modality.targets.values())
    meg = modality.ndim == 4
    arrays = load_rdm_arrays(path, keys, ndim=modality.ndim, zero_diagonal=not meg, check_diagonal_finite=not meg)
    subjects = {k: a.shape[0] for k, a in arrays.items()}
    if len(set(subjects.values())) > 1:
        listing = ", ".join(f"{k} {v}" for k, v in subjects.items())
        raise DataError(f"{path}: subject counts differ between targets ({listing}); expected the same subjects")
    sizes = {k: a.shape[-1] for k, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{k} {v}x{v}" for k, v in sizes.items())
        raise DataError(f"{path}: RDM sizes differ between targets ({listing})")
    if meg:
        sessions = {k: a.shape[1] for k, a in arrays.items()}
        if len(set(sessions.values())) > 1:
            listing = ", ".join(f"{k} {v}" for k, v in sessions.items())
            raise DataError(f"{path}: session counts differ between targets ({listing})")
    out = {}
    for name, key in modality.targets.items():
        a = np.array(arrays[key], dtype=np.float64)
        if meg:
            i = np.arange(a.shape[-1])
            a[..., i, i] = 0.0  # decoding accuracy of an image with itself is undefined
        else:
            a = a[:, None]
        out[name] = a
    return out


class _Builder:
    """Collects one track's groups, targets, input files and notes while :func:`load` reads the release."""

    def __init__(self, root: Path, mod: Modality, ts2_images: str) -> None:
        self.root, self.mod, self.ts2_images = root, mod, ts2_images
        self.notes: list[str] = []
        self.groups: dict[str, StimulusGroup] = {}
        self.targets: list[Target] = []
        self.files: dict[str, list[Path]] = {}
        self.image_lists: dict[str, list[Path]] = {}
        self.loaders: dict[str, Callable[[], np.ndarray] | None] = {}

    def add_group(self, gname: str, layout: GroupLayout) -> None:
        """Group ``gname`` with its targets, when its RDM file exists (else a note)."""
        rel = layout.target_file(self.mod.stem)
        path = self.root / rel
        if not path.is_file():
            self.notes.append(f"group {gname!r} ({layout.role}) skipped: {rel} not found under {self.root}")
            return
        rdms = read_target_file(path, self.mod)
        n = next(iter(rdms.values())).shape[-1]
        self.files[rel] = [path]
        images = self._images(gname, layout, path, n)
        if images is not None:
            ids = [p.stem for p in images]
            loader = self.loaders.get("78") if layout.image_dir is None else _image_loader(images)
            self.loaders[gname] = loader
        else:
            ids = [f"{gname}-{i + 1:03d}" for i in range(n)]
            loader = None
        self.groups[gname] = StimulusGroup(gname, ids, load_images=loader)
        for tname, a in rdms.items():
            source = f"{path} ({self.mod.targets[tname]})"
            self.targets.append(Target(tname, gname, a, kind=self.mod.kind, source=source))

    def _images(self, gname: str, layout: GroupLayout, path: Path, n: int) -> list[Path] | None:
        """The group's image files (checked against its ``n``x``n`` RDMs), or None with a note saying why."""
        if layout.image_dir is not None:
            folder = self.root / layout.image_dir
            if folder.is_dir():
                images = check_images(folder, n, path)
                self.image_lists[gname] = self.files[layout.image_dir + "/"] = images
                return images
            self.notes.append(
                f"group {gname!r} has RDMs but no images ({layout.image_dir}/ not found): scoreable with `rsabench "
                "score` only"
            )
            return None
        if self.ts2_images == "78" and "78" in self.image_lists:
            if n != len(self.image_lists["78"]):
                raise DataError(f"{path}: RDMs are {n}x{n} but the 78 test images number {len(self.image_lists['78'])}")
            self.notes.append(
                f"group {gname!r}: hidden test set TS2 scored on the 78 test images, as the challenge did "
                "(ts2_images='78')"
            )
            return self.image_lists["78"]
        self.notes.append(f"group {gname!r} has no images in the release: scoreable with `rsabench score` only")
        return None

    def train_groups(self) -> list[str]:
        """The training groups that have images (notes for the others and for subject counts)."""
        subjects = {g: next(t.n_subjects for t in self.targets if t.group == g) for g in self.groups}
        if len(set(subjects.values())) > 1:
            listing = ", ".join(f"{g} {s}" for g, s in subjects.items())
            self.notes.append("subject counts differ between groups: " + listing)
        train = []
        for g in TRAIN_GROUPS:
            if g in self.groups and self.groups[g].load_images is None:
                self.notes.append(f"group {g!r} dropped from training: its images are not present")
            elif g in self.groups:
                train.append(g)
        if not train:
            self.notes.append("no training group has images: only `rsabench score` can use this dataset")
        return train


def load(data_dir: str | Path | None = None, *, modality: str = "fmri", ts2_images: str = "78") -> Dataset:
    """The Algonauts 2019 fMRI (``modality="fmri"``) or MEG (``"meg"``) dataset from the release on disk.

    ``ts2_images``: ``"78"`` (default) scores the hidden test set TS2 on the 78 test images, as the
    challenge did; ``"none"`` leaves it without images.
    """
    mod = modality_for(modality)
    if ts2_images not in ("78", "none"):
        raise UsageError(f"{mod.name}: ts2_images must be '78' or 'none', got {ts2_images!r}")
    root = release_root(data_dir)
    if not root.is_dir():
        raise DataError(
            f"{root}: Algonauts 2019 data not found; download the release from {SOURCE}, then run "
            f"`rsabench data import {mod.name} PATH` (see `rsabench data info {mod.name}`)"
        )
    b = _Builder(root, mod, ts2_images)
    for gname, layout in GROUPS.items():
        b.add_group(gname, layout)
    if not b.targets:
        raise DataError(
            f"{root}: no {mod.stem}*.mat files found (expected e.g. {GROUPS['92'].target_file(mod.stem)}); "
            f"see `rsabench data info {mod.name}`"
        )
    train = b.train_groups()
    return Dataset(
        name=mod.name,
        groups=b.groups,
        targets=b.targets,
        train_groups=train,
        test_splits={split: [g] for split, g in TEST_SPLITS.items() if g in b.groups},
        citation=CITATION,
        license=LICENSE,
        description=mod.description,
        target_normalization=mod.normalization,
        conventions=("algonauts2019", "computed"),
        files=b.files,
        version="2019",
        notes=b.notes,
        named_splits={split: [g] for split, g in NAMED_SPLITS.items() if g in b.groups},
        submission_keys=dict(mod.targets),
    )


def load_fmri(data_dir: str | Path | None = None, ts2_images: str = "78") -> Dataset:
    """Algonauts 2019 fMRI track (targets EVC, IT)."""
    return load(data_dir, modality="fmri", ts2_images=ts2_images)


def load_meg(data_dir: str | Path | None = None, ts2_images: str = "78") -> Dataset:
    """Algonauts 2019 MEG track (targets MEG-early, MEG-late)."""
    return load(data_dir, modality="meg", ts2_images=ts2_images)
