"""Data management is part of the dataset plugin interface: a third-party dataset gets `rsabench data ...`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli

from rsabench import datastore
from rsabench import plugins as plugins_module
from rsabench.dataset import Dataset, DataSource, StimulusGroup, Target, with_data
from rsabench.errors import DataError, UsageError
from rsabench.hookspecs import hookimpl
from rsabench.options import route_options
from rsabench.plugins import build_plugins
from rsabench.registry import accepted_options, lazy


def _rdms(n: int) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(2, n, 5))
    z = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    return (1.0 - np.einsum("sik,sjk->sij", z, z) / 5)[:, None]


def load_toy(data_dir: Path, n: str = "6") -> Dataset:
    """A toy dataset read from ``<data_dir>/toy/toy.npy`` (its presence is all that matters here)."""
    path = Path(data_dir) / "toy" / "toy.npy"
    if not path.is_file():
        raise DataError(f"{path}: not found")
    k = int(n)
    return Dataset(
        name="toy-data",
        groups={"g": StimulusGroup("g", [f"i{i}" for i in range(k)])},
        targets=[Target("roi", "g", _rdms(k))],
        train_groups=["g"],
        citation="Toy (2024)",
        license="CC0",
        files={"toy.npy": [path]},
    )


def load_plain(data_dir: Path) -> Dataset:
    ds = load_toy(data_dir)
    ds.name = "toy-plain"
    return ds


class ToyData(DataSource):
    """What a plugin author writes from CONTRIBUTING.md: describe and verify."""

    def describe(self, data_dir: Path) -> dict:
        path = data_dir / "toy" / "toy.npy"
        return {"looks_in": str(path.parent), "files": ["toy.npy: the toy RDMs"], "present": path.is_file()}

    def verify(self, data_dir: Path, *, checksums: bool = True) -> list[str]:
        path = data_dir / "toy" / "toy.npy"
        return [] if path.is_file() else [f"{path}: missing (expected the toy RDMs)"]


class ToyPlugin:
    @hookimpl
    def register_datasets(self, register):
        register("toy-data", with_data(load_toy, ToyData()), summary="a toy dataset with a data source")
        register("toy-plain", load_plain, summary="a toy dataset without one")
        register("toy-lazy", with_data(lazy("no_such_toy_module:load"), "no_such_toy_module:DATA"))


@pytest.fixture
def toy(monkeypatch):
    built = build_plugins(extra={"toy": ToyPlugin()})
    monkeypatch.setattr(plugins_module, "get_plugins", lambda: built)
    return built


def test_registration_is_lazy_and_keeps_the_factory(toy):
    assert {"toy-data", "toy-plain", "toy-lazy"} <= set(toy.datasets.names()) and "toy" not in toy.load_errors
    factory = toy.datasets.get("toy-data")
    assert factory.__name__ == "load_toy" and toy.datasets.summary("toy-data") == "a toy dataset with a data source"
    assert accepted_options(factory, skip=1) == ("n",)  # options are still the factory's parameters
    with pytest.raises(UsageError, match="no dataset of this run takes option 'size'"):
        route_options("--dataset-option", "dataset", [("size", "3")], {"toy-data": accepted_options(factory, skip=1)})
    assert "lazy(" in toy.datasets.get("toy-lazy").__name__  # nothing imported at registration


def test_info_and_verify_through_the_cli(toy, tmp_path, capsys):
    code, out, err = run_cli(capsys, ["data", "info", "toy-data", "--data-dir", str(tmp_path)])
    assert code == 0, err
    assert f"looks_in: {tmp_path / 'toy'}" in out and "present: False" in out and "toy.npy: the toy RDMs" in out
    code, out, err = run_cli(capsys, ["data", "verify", "toy-data", "--data-dir", str(tmp_path)])
    assert code == 2 and err.splitlines() == [
        f"problem: {tmp_path / 'toy' / 'toy.npy'}: missing (expected the toy RDMs)",
        "toy-data: 1 problem(s)",
    ]
    (tmp_path / "toy").mkdir()
    np.save(tmp_path / "toy" / "toy.npy", np.zeros(3))
    code, out, err = run_cli(capsys, ["data", "verify", "toy-data", "--data-dir", str(tmp_path)])
    assert (code, out.strip()) == (0, "toy-data: OK"), err
    code, out, _ = run_cli(capsys, ["data", "info", "toy-data", "--data-dir", str(tmp_path), "--format", "json"])
    assert json.loads(out) == {
        "name": "toy-data",
        "summary": "a toy dataset with a data source",
        "looks_in": str(tmp_path / "toy"),
        "files": ["toy.npy: the toy RDMs"],
        "present": True,
    }


def test_import_and_fetch_are_optional(toy, tmp_path, capsys):
    code, _, err = run_cli(capsys, ["data", "import", "toy-data", str(tmp_path), "--data-dir", str(tmp_path)])
    assert (
        code == 2
        and err.strip() == "error: dataset 'toy-data' has no importer here (see `rsabench data info toy-data`)"
    )
    code, _, err = run_cli(capsys, ["data", "fetch", "toy-data", "--data-dir", str(tmp_path)])
    assert code == 2 and err.strip() == "error: dataset 'toy-data': no fetcher here; see `rsabench data info toy-data`"
    assert sorted(tmp_path.iterdir()) == []


def test_a_dataset_without_a_data_source_is_loaded_and_checked(toy, tmp_path, capsys):
    info = datastore.info("toy-plain", tmp_path)
    assert info["present"] is False and "toy.npy: not found" in info["error"]
    assert datastore.verify("toy-plain", tmp_path) == [f"{tmp_path / 'toy' / 'toy.npy'}: not found"]
    (tmp_path / "toy").mkdir()
    np.save(tmp_path / "toy" / "toy.npy", np.zeros(3))
    info = datastore.info("toy-plain", tmp_path)
    assert info["present"] and info["targets"] == ["roi"] and info["groups"]["g"]["images"] == 6
    assert info["license"] == "CC0" and datastore.verify("toy-plain", tmp_path) == []
    code, out, _ = run_cli(capsys, ["data", "verify", "toy-plain", "--data-dir", str(tmp_path)])
    assert (code, out.strip()) == (0, "toy-plain: OK")


def test_a_broken_data_source_names_the_plugin(toy, tmp_path, capsys):
    code, _, err = run_cli(capsys, ["data", "info", "toy-lazy", "--data-dir", str(tmp_path)])
    assert code == 1 and err.startswith(
        "failed: dataset 'toy-lazy' (plugin 'toy'): its data source cannot be loaded (ModuleNotFoundError"
    )
    assert len(err.strip().splitlines()) == 1


def test_with_data_refuses_what_is_not_a_data_source():
    with pytest.raises(TypeError, match="DataSource"):
        with_data(load_toy, object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        with_data("load_toy", ToyData())  # type: ignore[arg-type]


def test_a_checksums_key_that_is_also_a_files_label_is_a_broken_plugin(tmp_path):
    from rsabench.errors import PluginError

    (tmp_path / "toy").mkdir()
    np.save(tmp_path / "toy" / "toy.npy", np.zeros(3))
    ds = load_toy(tmp_path)
    ds.checksums = {"toy.npy": "0" * 64}  # would be replaced by the digest of the file itself, unseen
    with pytest.raises(PluginError, match="'toy.npy' is both a checksums key and a files label"):
        ds.validate()
    ds.checksums = {"toy-generated": "0" * 64}
    ds.validate()
