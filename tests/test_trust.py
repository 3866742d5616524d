"""Regression tests for the trust issue: one section per failure found by a hostile user on a fresh machine.

(Item 1, the tolerance that fitted one CPU, is ``test_batch_rdm_equivalence.py::test_extract_rdms_equals_pairwise``
with its bound from ``precision.py``; item 6 and most of item 10 are table rows of ``test_hostile_inputs.py``.)
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from algonauts_fixture import make_release
from cli_helpers import record_files, run_cli

from rsabench import records
from rsabench.errors import CellFailure, DataError
from rsabench.hookspecs import hookimpl
from rsabench.plugins import build_plugins, get_plugins
from rsabench.runner import RunOptions, Session

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--weights", "random", "--image-size", "32", "--epochs", "1", "--layer", "features.1", "--layer", "features.4"]


def strict_load(path: Path) -> dict:
    """Parse as strict JSON: NaN / Infinity tokens are errors."""

    def refuse(token: str):
        raise ValueError(f"{path}: non-standard JSON token {token}")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


# -- 1. the reference data is found, or its absence is said ---------------------------------------
def test_reference_data_lookup(monkeypatch, tmp_path):
    import conftest

    monkeypatch.setenv("RSABENCH_TEST_DATA", str(tmp_path))
    assert conftest.shared_data_path() == tmp_path
    monkeypatch.delenv("RSABENCH_TEST_DATA")
    found = conftest.shared_data_path()
    assert found is None or (
        found.name == "data" and found.parent.name == "shared" and found.parent.parent in ROOT.parents
    )


# -- 2. no code runs from a data file -------------------------------------------------------------
class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", ["exploit-only", "dict-with-exploit"])
def test_crafted_pickle_in_a_data_file_runs_nothing(tmp_path, payload):
    from rsabench.matio import read_npy_dict

    marker = tmp_path / "pwned"
    obj = Exploit(marker) if payload == "exploit-only" else {1: "V1v", 2: Exploit(marker)}
    path = tmp_path / "mapping_prf-visualrois.npy"
    np.save(path, np.array(obj, dtype=object), allow_pickle=True)
    try:
        result = read_npy_dict(path)
    except DataError as exc:
        assert str(path) in str(exc)
    else:
        assert result[1] == "V1v" and not isinstance(result[2], str)  # the call is an inert placeholder
    assert not marker.exists(), "the pickle's payload ran"
    np.save(path, np.zeros(3))
    with pytest.raises(DataError, match="expected a pickled dict"):
        read_npy_dict(path)


def test_release_mapping_files_read_without_unpickling(tmp_path):
    """The Algonauts 2023 mapping files: int or numpy-int keys, pickle protocols 2 to 5."""
    from rsabench.matio import read_npy_dict

    for protocol in (2, 3, 4, 5):
        for keys in (int, np.int64, np.int32):
            mapping = {keys(0): "Unknown", keys(1): "OFA", keys(7): "aTL-faces"}
            path = tmp_path / f"m{protocol}{keys.__name__}.npy"
            with open(path, "wb") as fh:  # what np.save writes, with the pickle protocol of other numpy versions
                np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
                pickle.dump(np.array(mapping, dtype=object), fh, protocol=protocol)
            assert read_npy_dict(path) == {0: "Unknown", 1: "OFA", 7: "aTL-faces"}


def test_source_never_unpickles():
    """No reader of data, caches or checkpoints can unpickle: a grep over rsabench/."""
    bad = []
    for path in sorted((ROOT / "rsabench").rglob("*.py")):
        text = path.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"allow_pickle\s*=\s*True|pickle\.loads?\(|Unpickler|joblib\.load|dill\.", code):
                bad.append(f"{path.name}:{n}: {line.strip()}")
            if "torch.load(" in code and "weights_only=True" not in code:
                bad.append(f"{path.name}:{n}: {line.strip()}")
            if re.search(r"np\.load\(", code) and "allow_pickle=False" not in code:
                bad.append(f"{path.name}:{n}: {line.strip()}")
    assert not bad, bad


# -- 3. a plugin discovered first cannot hijack a built-in ------------------------------------------
def _impostor_package(tmp_path: Path) -> Path:
    """An installed distribution 'aaa-impostor' (discovered before anything else) registering a built-in name."""
    (tmp_path / "aaa_impostor.py").write_text(
        "from rsabench.hookspecs import hookimpl\n"
        "@hookimpl\n"
        "def register_datasets(register):\n"
        "    register('own-dataset', lambda data_dir: 1)\n"
        "    register('kriegeskorte2008', lambda data_dir: 'impostor')\n"
    )
    dist = tmp_path / "aaa_impostor-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aaa-impostor\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[rsabench]\nimpostor = aaa_impostor\n")
    return tmp_path


def test_entry_point_plugin_cannot_replace_a_builtin(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_impostor_package(tmp_path)))
    plugins = build_plugins()
    assert plugins.datasets.plugin_of("kriegeskorte2008") == "rsabench.datasets"
    assert "own-dataset" not in plugins.datasets.names()  # the hook is refused whole
    assert plugins.load_errors["aaa-impostor.impostor"] == [
        "dataset 'kriegeskorte2008' is already registered by plugin 'rsabench.datasets'; none of its datasets were "
        "registered"
    ]
    assert {"kriegeskorte2008", "synthetic", "nsd", "algonauts-fmri", "algonauts-meg"} <= set(plugins.datasets.names())


def test_cli_runs_the_builtin_when_an_impostor_is_installed(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(_impostor_package(tmp_path))}
    out = subprocess.run(
        [sys.executable, "-m", "rsabench.cli", "data", "info", "kriegeskorte2008", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["looks_in"] == "embedded in the rsabench package"
    assert (
        "plugin 'aaa-impostor.impostor' skipped: dataset 'kriegeskorte2008' is already registered by plugin "
        "'rsabench.datasets'" in out.stderr
    )


# -- 4. the cell hash covers every input file, and only the plugins a cell uses ---------------------
def _plan(data_dir: Path, runs: Path, plugins=None, **options):
    session = Session(
        plugins or get_plugins(),
        RunOptions(weights="random", image_size=32, epochs=1, data_dir=str(data_dir), **options),
    )
    return session.plan(["algonauts-fmri"], ["alexnet"], ["frozen"], [0], ["IT"], runs)[0]


def test_swapping_two_training_images_changes_the_cell_hash(tmp_path):
    make_release(tmp_path, "fmri", {"92": 16, "78": 10})  # 16: enough images for the splits
    runs = tmp_path / "runs"
    before = _plan(tmp_path, runs)
    records.write_atomic(before.path, {"schema": "stale"})  # whatever is at the old path is never reused
    folder = tmp_path / "algonauts2019/Training_Data/92_Image_Set/92images"
    a, b, tmp = folder / "image_03.jpg", folder / "image_07.jpg", folder / "swap.tmp"
    a.rename(tmp), b.rename(a), tmp.rename(b)
    after = _plan(tmp_path, runs)
    assert after.cell != before.cell and not after.cached
    changed = {
        k
        for k in before.config["data_checksums"]
        if before.config["data_checksums"][k] != after.config["data_checksums"][k]
    }
    assert changed == {"Training_Data/92_Image_Set/92images/"}
    image = folder / "image_05.jpg"
    image.write_bytes(image.read_bytes() + b"\0")  # same name, same size class, other content
    assert _plan(tmp_path, runs).cell not in (before.cell, after.cell)


def test_digest_cache_hashes_each_file_once_until_it_changes(tmp_path, monkeypatch):
    from rsabench import digests

    files = []
    for i in range(3):
        files.append(tmp_path / f"f{i}.bin")
        files[-1].write_bytes(os.urandom(1000))
    calls = []
    real = digests.sha256_file
    monkeypatch.setattr(digests, "sha256_file", lambda p: calls.append(Path(p).name) or real(p))
    cache_file = tmp_path / "cache" / "digests.json"
    first = digests.content_checksums({"set/": files}, digests.DigestCache(cache_file))
    assert len(calls) == 3
    again = digests.content_checksums({"set/": files}, digests.DigestCache(cache_file))
    assert again == first and len(calls) == 3  # from the cache: nothing re-read
    os.replace(files[0], tmp_path / "x"), os.replace(files[1], files[0]), os.replace(tmp_path / "x", files[1])
    swapped = digests.content_checksums({"set/": files}, digests.DigestCache(cache_file))
    assert swapped != first and len(calls) == 5  # the two renamed files were hashed again
    assert digests.content_checksums({"one": [files[2]]}, digests.DigestCache(cache_file))["one"] == real(files[2])


class RaisingPlugin:
    @hookimpl
    def register_metrics(self, register):
        raise RuntimeError("broken plugin")


def test_installing_a_plugin_changes_no_hash(tmp_path):
    session = lambda plugins: Session(plugins, RunOptions(weights="random", image_size=32, epochs=1))  # noqa: E731
    plain = session(build_plugins()).plan(["kriegeskorte2008"], ["alexnet"], ["dissim"], [0], [], tmp_path)[0]
    more = session(build_plugins(extra={"broken": RaisingPlugin()})).plan(
        ["kriegeskorte2008"], ["alexnet"], ["dissim"], [0], [], tmp_path
    )[0]
    assert plain.cell == more.cell
    assert set(plain.config["code"]["plugins"]) == {
        "rsabench.datasets",
        "rsabench.backbones",
        "rsabench.objectives",
        "rsabench.metrics",
        "rsabench.conventions",  # the scoring conventions change the numbers too
    }


# -- 5. broken models get a failure, never a number; records are strict JSON ----------------------
def test_diverging_training_is_a_failure_not_a_score(capsys, tmp_path):
    runs = tmp_path / "runs"
    code, _, err = run_cli(
        capsys, ["run", *FAST, "--epochs", "2", "--objective", "dissim", "--lr", "1e30", "--runs-dir", str(runs)]
    )
    assert code == 1, err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("failed: cell kriegeskorte2008 / hIT / torchvision:alexnet / dissim / seed 0: training diverged")
    )
    assert not record_files(runs)
    [failure] = runs.rglob("*.failed.json")  # the failure is recorded, with its cause
    assert json.loads(failure.read_text())["error"]["message"].startswith("cell kriegeskorte2008 / hIT")


def test_non_finite_features_name_the_layer():
    import torch

    from rsabench.features import extract_rdms

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
    with pytest.raises(CellFailure, match="layer 0 produced non-finite features"):
        extract_rdms(model, ["0"], torch.randn(5, 3, 8, 8))


def test_constant_layers_are_not_selectable_and_have_no_per_layer_score(tmp_path):
    """A layer whose RDM is constant (here: a dead ReLU) is excluded from selection, its per-layer entry
    carries the reason instead of a score, and the record is still strict JSON."""
    import torch

    session = Session(get_plugins(), RunOptions(weights="random", image_size=32, layers=("features.1", "features.4")))
    [cell] = session.plan(["kriegeskorte2008"], ["alexnet"], ["frozen"], [0], [], tmp_path)
    real_build = session.plugins.backbones.get("alexnet")().__class__.build

    def dead_conv2(self, weights="imagenet", seed=0):
        built = real_build(self, weights, seed)
        with torch.no_grad():
            built.model.features[3].weight.zero_()
            built.model.features[3].bias.fill_(-1.0)  # relu(-1) = 0 everywhere: a constant map
        return built

    backbone_cls = session.plugins.backbones.get("alexnet")().__class__
    original = backbone_cls.build
    backbone_cls.build = dead_conv2
    try:
        record = session.run(cell)
    finally:
        backbone_cls.build = original
    assert record["selection"]["layer"] == "features.1"
    dead = [e for e in record["per_layer_final"] if e["layer"] == "features.4"]
    assert dead and all(e["score"] is None and "constant" in e["problem"] for e in dead)
    assert strict_load(cell.path)["cell"] == cell.cell


def test_records_are_strict_json_with_null_for_missing(capsys, tmp_path):
    """One simulated subject: no ceiling can be estimated; the record says null, never NaN."""
    runs = tmp_path / "runs"
    argv = [
        "run",
        *FAST,
        "--dataset",
        "synthetic",
        "--dataset-option",
        "subjects=1",
        "--dataset-option",
        "n_per_group=24",
        "--objective",
        "frozen",
        "--target",
        "late",
        "--runs-dir",
        str(runs),
    ]
    code, _, err = run_cli(capsys, argv)
    assert code == 0, err
    [path] = record_files(runs)
    doc = strict_load(path)
    assert doc["scores"][0]["score"]["ceiling_lower"] is None and doc["scores"][0]["score"]["ceiling_upper"] is None
    code, out, _ = run_cli(capsys, ["leaderboard", "--runs-dir", str(runs), "--format", "json"])
    assert code == 0 and json.loads(out, parse_constant=lambda t: pytest.fail(t))[0]["normalized"] is None


# -- 7. malformed records are named, never cached ------------------------------------------------
def test_malformed_record_is_named_and_its_cell_runs_again(capsys, tmp_path):
    runs = tmp_path / "runs"
    argv = ["run", *FAST, "--objective", "frozen", "--runs-dir", str(runs), "--format", "csv"]
    assert run_cli(capsys, argv)[0] == 0
    [path] = record_files(runs)
    good = json.loads(path.read_text())
    broken = {k: v for k, v in good.items() if k != "config"}
    path.write_text(json.dumps(broken))
    code, _, err = run_cli(capsys, ["leaderboard", "--runs-dir", str(runs)])
    assert code == 2 and f"{path}: skipped, record lacks 'config'" in err
    code, _, err = run_cli(capsys, argv)
    assert code == 0 and "1 cell(s), 0 cached, 1 to run" in err and "the cell will run again" in err
    assert json.loads(path.read_text())["cell"] == good["cell"]
    tampered = json.loads(path.read_text())
    tampered["config"]["seed"] = 7  # numbers no longer belong to the hash in the name
    path.write_text(json.dumps(tampered))
    with pytest.raises(records.InvalidRecord, match="cell hash does not match its config"):
        records.load_record(path)


def test_a_record_of_another_cell_in_a_cells_place_is_not_its_record(capsys, tmp_path):
    runs = tmp_path / "runs"
    argv = ["run", *FAST, "--objective", "frozen", "--objective", "dissim", "--runs-dir", str(runs), "--format", "csv"]
    assert run_cli(capsys, argv)[0] == 0
    by_objective = {json.loads(p.read_text())["config"]["objective"]: p for p in record_files(runs)}
    frozen_cell = json.loads(by_objective["frozen"].read_text())["cell"]
    by_objective["frozen"].write_text(by_objective["dissim"].read_text())  # a valid record, of the other cell
    code, out, err = run_cli(capsys, argv)
    assert code == 0 and "2 cell(s), 1 cached, 1 to run" in err and "holds the record of another cell" in err
    assert json.loads(by_objective["frozen"].read_text())["cell"] == frozen_cell
    assert sum(1 for line in out.splitlines() if ",frozen," in line) == 1  # its row is back

    copy = runs / "old" / "copy.json"
    copy.parent.mkdir()
    copy.write_text(by_objective["dissim"].read_text())  # a copy of a record elsewhere: one row set per cell
    code, out, err = run_cli(capsys, ["leaderboard", "--runs-dir", str(runs), "--format", "csv"])
    assert code == 0 and sum(1 for line in out.splitlines() if ",dissim," in line) == 1
    assert "a copy of the record of cell" in err


# -- 8. two runs of one cell share a runs dir safely ---------------------------------------------
def test_concurrent_runs_of_one_cell(tmp_path):
    runs = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "rsabench.cli",
        "run",
        *FAST,
        "--epochs",
        "3",
        "--objective",
        "dissim",
        "--runs-dir",
        str(runs),
        "--format",
        "csv",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    assert len(record_files(runs)) == 1
    assert not list(runs.rglob("*.ckpt")) and not list(runs.rglob(".*.lock"))
    rows = [out.splitlines()[1] for out, _ in results]
    assert rows[0] == rows[1]  # the second took the first one's record


def test_cell_lock_excludes_and_waits(tmp_path):
    """While one process holds a cell's lock, another waits (and says so)."""
    record = tmp_path / "d" / "cell.json"
    code = (
        "import sys, time; from pathlib import Path; from rsabench.records import cell_lock\n"
        f"with cell_lock(Path({str(record)!r})):\n"
        "    print('locked', flush=True); time.sleep(3)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    notes, t0 = [], time.monotonic()
    with records.cell_lock(record, note=notes.append):
        waited = time.monotonic() - t0
    holder.wait(timeout=30)
    assert waited > 1.0 and "waiting for it" in notes[0]


# -- 9. no leftovers from imports ---------------------------------------------------------------
def test_killed_import_leftovers_are_removed_by_the_next_import(tmp_path):
    from rsabench import datastore

    src, data_dir = tmp_path / "src", tmp_path / "data"
    make_release(src, "fmri", {"92": 12, "78": 10})
    stale = data_dir / ".algonauts2019.import-killed"
    (stale / "unpacked").mkdir(parents=True)
    (stale / "unpacked" / "big.bin").write_bytes(b"\0" * 10000)
    datastore.import_release("algonauts-fmri", src / "algonauts2019", data_dir, checksums=False)
    assert sorted(p.name for p in data_dir.iterdir()) == ["algonauts2019"]


def test_refused_import_removes_the_data_dir_it_created(tmp_path, capsys):
    data_dir = tmp_path / "new" / "data"
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(
        capsys, ["data", "import", "algonauts-fmri", str(tmp_path / "empty"), "--data-dir", str(data_dir)]
    )
    assert code == 2 and "no Training_Data/" in err
    assert not (tmp_path / "new").exists()


# -- 10. exit codes, places, signals, permissions ------------------------------------------------
def test_full_disk_during_a_checkpoint_is_named(capsys, tmp_path, monkeypatch):
    from rsabench import training

    real = records.atomic_open

    def full(path, mode="w"):
        if str(path).endswith(".pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, mode)

    monkeypatch.setattr(training, "atomic_open", full)
    code, _, err = run_cli(capsys, ["run", *FAST, "--objective", "dissim", "--runs-dir", str(tmp_path / "runs")])
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert "cannot write checkpoint" in last and "No space left on device" in last and "enforce fail" not in last


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_exit_as_documented(tmp_path, signum, code):
    runs = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "rsabench.cli",
        "run",
        *FAST,
        "--epochs",
        "200",
        "--objective",
        "dissim",
        "--runs-dir",
        str(runs),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(runs.rglob("state.pt")) and time.monotonic() < deadline:  # training has started
        time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1].startswith(f"interrupted ({signal.Signals(signum).name})")
    assert "Traceback" not in err and not record_files(runs) and not list(runs.rglob("*.tmp"))
    assert list(runs.rglob("state.pt"))  # the checkpoint stays for the rerun to resume from


def test_files_respect_the_umask(tmp_path, capsys):
    old = os.umask(0o027)
    try:
        records.write_atomic(tmp_path / "r.json", {"a": 1})
        assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    os.umask(0o002)
    try:
        records.write_atomic(tmp_path / "s.json", {"a": float("nan")})
        assert (tmp_path / "s.json").stat().st_mode & 0o777 == 0o664
        assert strict_load(tmp_path / "s.json") == {"a": None}
    finally:
        os.umask(old)


def test_record_paths_stay_inside_the_runs_dir(tmp_path):
    config = {"dataset": "..", "target": "../../etc", "backbone": ".hidden", "objective": "a/b", "seed": 0}
    path = records.record_path(tmp_path, config, "f" * 64)
    assert path.resolve().parent.parent == tmp_path.resolve()
    assert not any(part.startswith(".") for part in path.relative_to(tmp_path).parts)


def test_click_errors_are_one_line(capsys):
    code, _, err = run_cli(capsys, ["run", "--image-size", "abc"])
    assert (
        code == 2 and err.count("\n") == 1 and err.startswith("error: rsabench run: Invalid value for '--image-size'")
    )
