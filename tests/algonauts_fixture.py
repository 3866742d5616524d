"""Generated Algonauts-2019-layout files for tests: MATLAB v5 / v7.3 writers and a small fake release.

``write_mat73`` writes what MATLAB's ``save -v7.3`` writes: an HDF5 file with a 512-byte userblock holding
the MATLAB text header, each variable stored column-major (so h5py sees its axes reversed: a MATLAB
``(15, 2, n, n)`` array is an HDF5 ``(n, n, 2, 15)`` dataset) with a ``MATLAB_class`` attribute.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

MAT73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."


def write_mat73(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A MATLAB v7.3 file (HDF5, transposed layout, MATLAB header in the userblock)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, a in arrays.items():
            d = f.create_dataset(name, data=np.transpose(np.asarray(a, dtype=np.float64)))
            d.attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as fh:
        fh.write(MAT73_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")
    return path


def write_mat5(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A MATLAB v5 file (scipy.io.savemat), arrays in their natural axis order."""
    scipy.io.savemat(path, {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})
    return path


def write_mat(path: Path, arrays: dict[str, np.ndarray], fmt: str) -> Path:
    return write_mat73(path, arrays) if fmt == "v7.3" else write_mat5(path, arrays)


def correlation_rdms(features: np.ndarray) -> np.ndarray:
    """``1 - pearson`` RDMs of ``(..., n, f)`` features (float64, exact zero diagonal)."""
    z = features - features.mean(axis=-1, keepdims=True)
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    rdm = 1.0 - z @ np.swapaxes(z, -1, -2)
    rdm = 0.5 * (rdm + np.swapaxes(rdm, -1, -2))
    i = np.arange(rdm.shape[-1])
    rdm[..., i, i] = 0.0
    return rdm


def fmri_rdms(rng: np.random.Generator, subjects: int, n: int, noise: float = 2.0, features: int = 40) -> np.ndarray:
    """``(subjects, n, n)`` 1 - Pearson RDMs sharing a latent structure, with subject noise."""
    shared = rng.standard_normal((n, features))
    return correlation_rdms(shared[None] + noise * rng.standard_normal((subjects, n, features)))


def meg_rdms(rng: np.random.Generator, subjects: int, sessions: int, n: int, noise: float = 2.0) -> np.ndarray:
    """``(subjects, sessions, n, n)`` decoding accuracies in percent (50 = chance), zero diagonal."""
    shared = rng.standard_normal((n, 30))
    d = correlation_rdms(shared[None, None] + noise * rng.standard_normal((subjects, sessions, n, 30)))
    acc = 50.0 + 25.0 * d  # 1 - r in [0, 2] -> 50..100 %
    i = np.arange(n)
    acc[..., i, i] = 0.0
    return acc


GROUP_DIRS = {
    "92": ("Training_Data/92_Image_Set", "92images", "image_{:02d}.jpg"),
    "118": ("Training_Data/118_Image_Set", "118images", "image_{:03d}.jpg"),
    "78": ("Test_Data", "78images", "78images_{:05d}.jpg"),
}


def write_images(folder: Path, pattern: str, n: int, rng: np.random.Generator) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / pattern.format(i + 1)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(p, quality=95)
        paths.append(p)
    return paths


def make_release(
    root: Path,
    modality: str = "fmri",
    sizes: dict[str, int] | None = None,
    fmt: str = "v7.3",
    subjects: int = 15,
    sessions: int = 2,
    images: bool = True,
    ts2: bool = True,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Write ``root/algonauts2019/...`` for one modality; returns ``{group: {variable: array}}`` written."""
    rng = np.random.default_rng(seed)
    sizes = sizes if sizes is not None else {"92": 12, "78": 10}
    base = root / "algonauts2019"
    written: dict[str, dict[str, np.ndarray]] = {}
    for group, n in sizes.items():
        folder, image_dir, pattern = GROUP_DIRS[group]
        (base / folder).mkdir(parents=True, exist_ok=True)
        suffixes = ["", "_TS2"] if group == "78" and ts2 else [""]
        for suffix in suffixes:
            if modality == "fmri":
                arrays = {"EVC_RDMs": fmri_rdms(rng, subjects, n), "IT_RDMs": fmri_rdms(rng, subjects, n)}
            else:
                arrays = {
                    "MEG_RDMs_early": meg_rdms(rng, subjects, sessions, n),
                    "MEG_RDMs_late": meg_rdms(rng, subjects, sessions, n),
                }
            write_mat(base / folder / f"target_{modality}{suffix}.mat", arrays, fmt)
            written[group + ("-ts2" if suffix else "")] = arrays
        if images:
            write_images(base / folder / image_dir, pattern, n, rng)
    return written
