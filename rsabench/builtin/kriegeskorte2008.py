"""Kriegeskorte et al. 2008: human IT fMRI RDMs for 92 images, embedded in the package (MIT, via rsatoolbox)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from rsabench.dataset import Dataset, LoadedDataSource, StimulusGroup, Target
from rsabench.errors import UsageError

CITATION = (
    "Kriegeskorte N, Mur M, Ruff DA, Kiani R, Bodurka J, Esteky H, Tanaka K, Bandettini PA (2008). "
    "Matching categorical object representations in inferior temporal cortex of man and monkey. "
    "Neuron 60(6):1126-1141. doi:10.1016/j.neuron.2008.10.043"
)
NAME = "kriegeskorte2008"
LICENSE = "MIT (rsatoolbox authors); see rsabench/data/LICENSE-kriegeskorte2008.txt"


def data_file() -> Path:
    return Path(str(resources.files("rsabench.data").joinpath("kriegeskorte2008.npz")))


def load(data_dir: Path | None = None) -> Dataset:
    """The embedded dataset: one group of 92 images, target ``hIT`` (4 subjects x 2 sessions).

    No separate test set exists, so train, validation and test are disjoint *images* drawn from the 92.
    """
    path = data_file()
    with np.load(path, allow_pickle=False) as npz:
        rdms = npz["rdms"].astype(np.float64)
        images = npz["images"]
    ids = [f"image_{i + 1:02d}" for i in range(images.shape[0])]
    group = StimulusGroup("92", ids, load_images=lambda: images)
    return Dataset(
        name=NAME,
        groups={"92": group},
        targets=[Target("hIT", "92", rdms, kind="1-pearson", source=str(path))],
        train_groups=["92"],
        test_splits={},
        citation=CITATION,
        license=LICENSE,
        description="Human inferior temporal cortex fMRI RDMs (4 subjects x 2 sessions), 92 object images.",
        files={path.name: [path]},
    )


class EmbeddedData(LoadedDataSource):
    """The data source of the embedded dataset: nothing to import or download."""

    def __init__(self) -> None:
        super().__init__(load, looks_in="embedded in the rsabench package")

    def import_release(self, src: Path, data_dir: Path, *, checksums: bool = True) -> dict:
        raise UsageError(f"dataset {NAME!r} is embedded in the package; nothing to import")

    def fetch(self, data_dir: Path) -> Path:
        return data_file().parent


DATA = EmbeddedData()
