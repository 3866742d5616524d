"""The Algonauts 2019 release on disk: the data source behind ``rsabench data info|verify|import|fetch``.

- describe: the files each track reads, where rsabench looks, what is present (shapes only).
- verify: sha256 against the manifest shipped in the package (``rsabench/data/algonauts2019-sha256.txt``) and
  invariants (square, symmetric, zero diagonal, finite, one image per RDM row, readable images, equal subject
  counts).
- import: a release (folder or .zip holding ``Training_Data/`` and/or ``Test_Data/``) is copied into
  ``<data_dir>/algonauts2019/``: staged next to it, verified, then swapped in (:func:`rsabench.datastore.import_tree`).
- fetch: Algonauts 2019 has no stable public URL with checksums; a UsageError says where to get it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from rsabench import datastore
from rsabench.dataset import DataSource
from rsabench.errors import DataError, UsageError
from rsabench.matio import array_shapes

from .algonauts import (
    CITATION,
    GROUPS,
    LICENSE,
    MODALITIES,
    NAMED_SPLITS,
    SOURCE,
    TEST_SPLITS,
    TRAIN_GROUPS,
    Modality,
    check_images,
    image_files,
    modality_for,
    read_target_file,
    release_root,
)

MANIFEST = "algonauts2019-sha256.txt"
RELEASE_PARTS = ("Training_Data", "Test_Data")
RELEASE = "the Algonauts 2019 release"


def read_manifest() -> dict[str, str]:
    """``{relative path: sha256}`` of the official release (shipped in ``rsabench/data``)."""
    return datastore.read_manifest(MANIFEST)


class AlgonautsData(DataSource):
    """The data source of one Algonauts 2019 track (``fmri`` or ``meg``)."""

    def __init__(self, modality: str) -> None:
        self.modality = modality_for(modality)

    def describe(self, data_dir: Path) -> dict[str, Any]:
        return describe(data_dir, self.modality.name)

    def verify(self, data_dir: Path, *, checksums: bool = True) -> list[str]:
        return verify_release(release_root(data_dir), self.modality, read_manifest() if checksums else None)

    def import_release(self, src: Path, data_dir: Path, *, checksums: bool = True) -> dict[str, Any]:
        """Import a release; existing files are kept (a release shipped in parts imports part by part), files
        from ``src`` replace same-named ones, and the merged tree must verify (this track needs at least one
        target file) before it replaces the old one."""
        manifest = read_manifest() if checksums else None
        return datastore.import_tree(
            src,
            release_root(data_dir),
            what=RELEASE,
            locate=lambda unpacked: release_parts(unpacked, src),
            check=lambda staged: verify_release(staged, self.modality, manifest),
        )

    def fetch(self, data_dir: Path) -> Path:
        root = release_root(data_dir)
        name, stem = self.modality.name, self.modality.stem
        if any((root / g.target_file(stem)).is_file() for g in GROUPS.values()):
            return root
        raise UsageError(
            f"{name}: no stable public URL with checksums is known for Algonauts 2019, so rsabench cannot fetch it; "
            f"download the release from {SOURCE}, then run `rsabench data import {name} PATH` "
            f"(a folder or .zip; files go to {root})"
        )


FMRI = AlgonautsData("fmri")
MEG = AlgonautsData("meg")


def release_parts(folder: Path, src: Path) -> dict[str, Path]:
    """The ``Training_Data`` / ``Test_Data`` folders of a release unpacked at ``folder`` (from ``src``)."""
    parts = datastore.find_folders(folder, RELEASE_PARTS)
    if not parts:
        raise DataError(f"{src}: no Training_Data/ or Test_Data/ folder found (expected the official release layout)")
    return parts


# -- verify ----------------------------------------------------------------------------------------
def verify_release(root: Path, mod: Modality, manifest: dict[str, str] | None) -> list[str]:
    """Problems of the release at ``root`` for track ``mod``: checksums (``manifest`` None: not checked), the
    track's target files and images, then every image decoded."""
    if not root.is_dir():
        return [f"{root}: Algonauts 2019 data not found (see `rsabench data info {mod.name}`)"]
    other_stems = {m.stem for m in MODALITIES.values()} - {mod.stem}

    def other_track(rel: str) -> bool:
        return PurePosixPath(rel).stem.removesuffix("_TS2") in other_stems

    problems = datastore.checksum_problems(root, manifest or {}, skip=other_track)
    problems += _target_problems(root, mod)
    problems += decode_images(root)
    return list(dict.fromkeys(problems))


def _target_problems(root: Path, mod: Modality) -> list[str]:
    """Each target file of ``mod`` read and checked, with its group's images; none found is a problem."""
    problems: list[str] = []
    found = 0
    for layout in GROUPS.values():
        path = root / layout.target_file(mod.stem)
        if not path.is_file():
            continue
        found += 1
        try:
            rdms = read_target_file(path, mod)
            n = next(iter(rdms.values())).shape[-1]
            if layout.image_dir and (root / layout.image_dir).is_dir():
                check_images(root / layout.image_dir, n, path)
        except DataError as exc:
            problems.append(str(exc))
    if not found:
        problems.append(
            f"{root}: no {mod.stem}*.mat found for {mod.name} (expected e.g. {GROUPS['92'].target_file(mod.stem)})"
        )
    return problems


def decode_images(root: Path) -> list[str]:
    """Fully decode every image of the release (catches truncated files a header check misses)."""
    from PIL import Image

    problems = []
    for layout in GROUPS.values():
        if layout.image_dir and (root / layout.image_dir).is_dir():
            for p in image_files(root / layout.image_dir):
                try:
                    with Image.open(p) as im:
                        im.load()
                except Exception as exc:
                    problems.append(f"{p}: unreadable image ({type(exc).__name__}: {exc})")
    return problems


# -- describe --------------------------------------------------------------------------------------
def expected_files(name: str) -> list[dict[str, str]]:
    """The release files a dataset reads: path (relative to ``algonauts2019/``), what it is."""
    mod = modality_for(name)
    out = []
    for gname, layout in GROUPS.items():
        out.append(
            {
                "path": layout.target_file(mod.stem),
                "what": f"{', '.join(mod.targets.values())}; group {gname} ({layout.role})",
            }
        )
        if layout.image_dir:
            out.append(
                {"path": layout.image_dir + "/", "what": f"stimuli of group {gname}, sorted file-name order = RDM rows"}
            )
    return out


def _file_entries(root: Path, mod: Modality) -> list[dict[str, Any]]:
    """Each expected file: present, image count (folders) or array shapes (files)."""
    files = []
    for entry in expected_files(mod.name):
        path = root / entry["path"]
        item: dict[str, Any] = {**entry, "present": path.exists()}
        if entry["path"].endswith("/") and path.is_dir():
            item["images"] = len(image_files(path))
        elif path.is_file():
            try:
                item["shapes"] = {k: list(v) for k, v in array_shapes(path).items()}
            except DataError as exc:
                item["error"] = str(exc)
        files.append(item)
    return files


def _group_entry(root: Path, mod: Modality, layout: Any) -> dict[str, Any]:
    """One group: its RDM file, subjects, size (sessions for MEG), images."""
    f = root / layout.target_file(mod.stem)
    info: dict[str, Any] = {"role": layout.role, "rdm_file": layout.target_file(mod.stem), "rdms_present": f.is_file()}
    if f.is_file():
        try:
            shape = array_shapes(f).get(next(iter(mod.targets.values())))
            if shape:
                info["subjects"] = shape[0]
                info["n"] = shape[-1]
                if mod.ndim == 4 and len(shape) == 4:
                    info["sessions"] = shape[1]
        except DataError as exc:
            info["error"] = str(exc)
    if layout.image_dir:
        d = root / layout.image_dir
        info["image_dir"] = layout.image_dir + "/"
        info["images"] = len(image_files(d)) if d.is_dir() else 0
    else:
        info["images"] = "the 78 test images (ts2_images='78', default) or none"
    return info


def describe(data_dir: str | Path | None = None, name: str = "algonauts-fmri") -> dict[str, Any]:
    """What the dataset needs, where it looks, and what is present (reads shapes only; never raises on bad files)."""
    mod = modality_for(name)
    root = release_root(data_dir)
    groups = {gname: _group_entry(root, mod, layout) for gname, layout in GROUPS.items()}
    present = [g for g, i in groups.items() if i["rdms_present"]]
    return {
        "name": mod.name,
        "description": mod.description,
        "looks_in": str(root),
        "present": bool(present),
        "groups_present": present,
        "targets": list(mod.targets),
        "variables": dict(mod.targets),
        "kind": mod.kind,
        "target_normalization": mod.normalization,
        "splits": {"train": list(TRAIN_GROUPS), **{k: [v] for k, v in TEST_SPLITS.items()}},
        "named_splits": dict(NAMED_SPLITS),
        "conventions": ["algonauts2019", "computed"],
        "files": _file_entries(root, mod),
        "groups": groups,
        "license": LICENSE,
        "citation": CITATION,
        "source": SOURCE,
        "how_to_get": (
            f"download the release from {SOURCE} (no stable URL with checksums is published); "
            f"then `rsabench data import {mod.name} PATH` (a folder or .zip)"
        ),
    }
