"""A cell is a pure function of its resolved config: ``rsabench run-cell`` in a fresh process reproduces a
record that ``rsabench run`` wrote, and refuses a config whose inputs changed or that is not a config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_cli

from rsabench.cli import main
from rsabench.plugins import get_plugins
from rsabench.records import iter_records, load_record

FAST = ["--weights", "random", "--image-size", "32", "--epochs", "1", "--layer", "features.1", "--layer", "features.4"]


def rsabench(*args: str, env_dir: Path) -> subprocess.CompletedProcess:
    """The CLI in a new interpreter (nothing cached in this process can leak into it)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(env_dir), "RSABENCH_CACHE": str(env_dir / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "rsabench", *args], capture_output=True, text=True, env=env, timeout=300
    )


def without_timings(record: dict) -> dict:
    """The record less how long it took and how often its new process found the feature cache (empty there)."""
    manifest = {k: v for k, v in record["manifest"].items() if k != "feature_cache"}
    return {**{k: v for k, v in record.items() if k != "timings"}, "manifest": manifest}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, list[tuple[Path, dict]]]:
    runs = tmp_path_factory.mktemp("runs")
    try:
        main(
            [
                "run",
                "--dataset",
                "kriegeskorte2008",
                "--backbone",
                "alexnet",
                "--objective",
                "frozen",
                "--objective",
                "dissim",
                "--objective-option",
                "space=fisher-z",
                "--objective-option",
                "normalization=none",
                "--split-seed",
                "3",
                "--bootstrap-seed",
                "5",
                "--seed",
                "7",
                "--batch-size",
                "16",
                "--runs-dir",
                str(runs),
                *FAST,
            ]
        )
    except SystemExit as exc:
        assert not exc.code
    records = list(iter_records(runs))
    assert sorted(r["config"]["objective"] for _, r in records) == ["dissim", "frozen"]
    return runs, records


def test_run_cell_reproduces_each_record_in_a_new_process(recorded, tmp_path):
    _, records = recorded
    for path, record in records:
        out = tmp_path / record["config"]["objective"]
        done = rsabench("run-cell", str(path), "--runs-dir", str(out), env_dir=tmp_path)
        assert done.returncode == 0, done.stderr
        [(_, again)] = list(iter_records(out))
        # Exactly equal, not approximately: same config, same runtime (device, batch size) from the manifest,
        # same machine, deterministic kernels; every number is the same sequence of float operations.
        assert without_timings(again) == without_timings(record)
        assert again["manifest"]["runtime"]["batch_size"] == 16


def test_run_cell_takes_a_bare_config(recorded, tmp_path):
    _, records = recorded
    path, record = next((p, r) for p, r in records if r["config"]["objective"] == "frozen")
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(record["config"]))
    done = rsabench(
        "run-cell", str(config_file), "--batch-size", "16", "--runs-dir", str(tmp_path / "out"), env_dir=tmp_path
    )
    assert done.returncode == 0, done.stderr
    [(_, again)] = list(iter_records(tmp_path / "out"))
    assert again["scores"] == record["scores"] and again["cell"] == record["cell"]


def test_the_record_runtime_is_what_is_not_hashed(recorded):
    _, records = recorded
    for _, record in records:
        assert set(record["manifest"]["runtime"]) == {"device", "batch_size", "channels_last", "keep_checkpoints"}
        assert "batch_size" not in record["config"] or record["config"]["train"]["batch_size"] == 16
        assert record["config"]["split"]["seed"] == 3 and record["config"]["bootstrap"]["seed"] == 5


def run_edited_config(recorded, tmp_path, capsys, objective: str, edit) -> tuple[int, str]:
    """``run-cell`` on the config of the recorded ``objective`` cell after ``edit``: (exit code, stderr)."""
    _, records = recorded
    record = json.loads(json.dumps(next(r for _, r in records if r["config"]["objective"] == objective)))
    edit(record["config"])
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(record["config"]))
    code, _, err = run_cli(capsys, ["run-cell", str(config_file), "--runs-dir", str(tmp_path / "out")])
    return code, err


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda c: c["data_checksums"].update({"rdms": "0" * 64}),
            "rdms differs from what this cell's config was resolved with",
        ),
        (lambda c: c.update(weights_sha256="0" * 64), "a digest goes with a weights file only"),
        (lambda c: c.pop("split"), "config lacks 'split'"),
        (lambda c: c["split"].update(seed="3"), "config.split.seed has the wrong type (str, expected integer)"),
        (lambda c: c.update(trains=True), "config.train has the wrong type"),
        (lambda c: c["code"].update(rsabench="0.0.0"), "this cell's config was resolved with code"),
        (lambda c: c.update(extra_key=1), "Additional properties are not allowed ('extra_key' was unexpected)"),
        (lambda c: c["bootstrap"].update(samples=10**9), "config.bootstrap.samples"),
        (lambda c: c.update(dataset_version="2"), "config: dataset 'kriegeskorte2008' is version 1"),
        (lambda c: c.update(conventions=["algonauts2019"]), "scored under computed; the config says"),
        (lambda c: c.update(target="nosuch"), "config: 'nosuch' is not a target of dataset 'kriegeskorte2008'"),
        (lambda c: c["objective_options"].update(bogus=1), "config: objective 'frozen' takes no option 'bogus'"),
        (lambda c: c["split"].update(val_fraction=1.5), "config.split.val_fraction"),
        (lambda c: c.update(image_size=16, layers=[]), "--image-size 16: backbone torchvision:alexnet cannot take"),
        (lambda c: c.update(seed=1.0), "config.seed has the wrong type (float, expected integer)"),
        (lambda c: c.update(image_size=64.0), "config.image_size has the wrong type (float, expected integer)"),
        (lambda c: c.update(seed=2**64), "config.seed: 18446744073709551616 is greater than the maximum"),
        (lambda c: c["dataset_options"].update(bogus=1), "config: dataset 'kriegeskorte2008' takes no option 'bogus'"),
        (lambda c: c.update(layers=["features.1", "features.1"]), "config.layers: ['features.1', 'features.1'] has"),
        (lambda c: c.update(loss_layer="features.1"), "config.loss_layer has the wrong type (str, expected null)"),
    ],
)
def test_run_cell_refuses_a_config_that_does_not_match(recorded, tmp_path, capsys, edit, message):
    code, err = run_edited_config(recorded, tmp_path, capsys, "frozen", edit)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not list((tmp_path / "out").rglob("*.json")) if (tmp_path / "out").exists() else True
    if not message.startswith("--image-size"):  # what needs no built network is refused before the cell's lock
        assert not list(tmp_path.rglob(".*.lock"))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(loss_layer=None), "config.loss_layer has the wrong type (NoneType, expected string)"),
        (lambda c: c["train"].update(momentum=-5), "config.train.momentum: -5 is less than the minimum of 0"),
        (lambda c: c["train"].update(epochs=1.0), "config.train.epochs has the wrong type (float, expected integer)"),
    ],
)
def test_run_cell_refuses_a_trained_config_that_does_not_hold(recorded, tmp_path, capsys, edit, message):
    code, err = run_edited_config(recorded, tmp_path, capsys, "dissim", edit)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.rglob(".*.lock")) and not list(tmp_path.rglob("*.ckpt"))


def test_run_cell_checks_the_weights_file(recorded, tmp_path, capsys):
    import torch

    _, records = recorded
    record = json.loads(json.dumps(next(r for _, r in records if r["config"]["objective"] == "frozen")))
    built = get_plugins().backbones.get("alexnet")().build(weights="random", seed=0)
    weights = tmp_path / "w.pt"
    torch.save(built.model.state_dict(), weights)
    record["config"].update(weights=str(weights), weights_sha256="0" * 64)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(record["config"]))
    code, _, err = run_cli(capsys, ["run-cell", str(config_file), "--runs-dir", str(tmp_path / "out")])
    assert code == 2 and "the file's sha256 differs from the cell config's weights_sha256" in err, err


def test_run_cell_refuses_a_record_that_is_not_what_it_says(recorded, tmp_path, capsys):
    _, records = recorded
    original = next(r for _, r in records if r["config"]["objective"] == "dissim")
    for edit, message in [
        (lambda r: r.update(schema="rsabench.cell/1"), "schema 'rsabench.cell/1', expected 'rsabench.cell/2'"),
        (lambda r: r.update(cell="0" * 64), "its cell hash does not match its config"),
        (lambda r: r["config"].update(seed=5), "its cell hash does not match its config"),
        (lambda r: r["config"]["train"].clear(), "config.train"),
    ]:
        record = json.loads(json.dumps(original))
        edit(record)
        path = tmp_path / "record.json"
        path.write_text(json.dumps(record))
        code, _, err = run_cli(capsys, ["run-cell", str(path), "--runs-dir", str(tmp_path / "out")])
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (message, err)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.json"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "not valid JSON"),
        ('{"a": NaN}', "not valid JSON"),
        ('{"a": 1e999}', "number 1e999 overflows a float"),
        ('{"a": 1, "a": 2}', "key 'a' given twice in one object"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
        ("[]", "config has the wrong type (list, expected object)"),
    ],
)
def test_run_cell_refuses_what_is_not_a_config(tmp_path, capsys, text, message):
    config_file = tmp_path / "config.json"
    config_file.write_text(text)
    code, _, err = run_cli(capsys, ["run-cell", str(config_file), "--runs-dir", str(tmp_path / "out")])
    assert code == 2 and message in err and str(config_file) in err, err


def test_every_objective_rebuilds_from_its_recorded_options():
    """``objective_options`` in a config are enough to rebuild the objective a cell trained."""
    plugins = get_plugins()
    for name in plugins.objectives.entries:
        factory = plugins.objectives.get(name)
        options = factory().options()
        rebuilt = factory(**options)
        assert rebuilt.options() == options and json.loads(json.dumps(options)) == options, name


def test_a_recorded_record_is_a_valid_record(recorded):
    for path, _ in recorded[1]:
        load_record(path)
