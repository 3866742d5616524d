"""Bad input, end to end through the CLI: every case ends with the documented exit code, one line on stderr
naming the option or file and what was expected, no traceback, and nothing written (runs dir, output file,
data dir).

Each case is ``(id, argv, exit code, fragment of the message)``; ``{tmp}`` in argv is a per-test folder
holding the bad files made by :func:`bad_files`, ``{runs}``, ``{out}`` and ``{data}`` are paths that must
not exist afterwards.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_cli

from rsabench import plugins as plugins_module
from rsabench.dataset import Dataset
from rsabench.hookspecs import hookimpl
from rsabench.plugins import build_plugins

FAST = ["--weights", "random", "--image-size", "64", "--epochs", "1"]


def bad_files(tmp: Path) -> None:
    """Every malformed input the cases refer to."""
    n = 92
    rng = np.random.default_rng(0)
    good = rng.random((n, n))
    good = good + good.T
    np.fill_diagonal(good, 0.0)
    np.save(tmp / "constant.npy", 1.0 - np.eye(n))
    nan = good.copy()
    nan[2, 3] = nan[3, 2] = np.nan
    np.save(tmp / "nan.npy", nan)
    np.save(tmp / "small.npy", good[:10, :10])
    asym = good.copy()
    asym[0, 1] += 0.5
    np.save(tmp / "asymmetric.npy", asym)
    np.save(tmp / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp / "good.npy", good)
    (tmp / "empty.npy").write_bytes(b"")
    (tmp / "garbage.pt").write_bytes(b"not a checkpoint at all")
    net = torch.nn.Linear(3, 2)
    torch.save(net.state_dict(), tmp / "wrong-arch.pt")
    import torchvision

    alex = torchvision.models.alexnet(weights=None).state_dict()
    alex["features.0.weight"] = torch.full_like(alex["features.0.weight"], float("nan"))
    torch.save(alex, tmp / "nan-alexnet.pt")
    (tmp / "a-file").write_text("x")
    with zipfile.ZipFile(tmp / "empty.zip", "w"):
        pass
    (tmp / "truncated.zip").write_bytes((tmp / "empty.zip").read_bytes()[:10] + b"PK\x03\x04garbage")
    (tmp / "not-a-zip.txt").write_text("hello")
    with zipfile.ZipFile(tmp / "unsafe.zip", "w") as zf:
        zf.writestr("../../escape.txt", "x")
    (tmp / "no-release").mkdir()
    (tmp / "no-release" / "readme.txt").write_text("nothing here")
    records = tmp / "records"
    (records / "kriegeskorte2008").mkdir(parents=True)
    (records / "kriegeskorte2008" / "missing-config.json").write_text(
        json.dumps({"schema": "rsabench.cell/2", "cell": "0" * 64})
    )
    (records / "kriegeskorte2008" / "truncated.json").write_text('{"schema": "rsabench.cell/2", "cell": ')
    (records / "foreign.json").write_text(json.dumps({"schema": "something/2"}))


CASES = [
    # -- run: names ------------------------------------------------------------------------------
    (
        "unknown-dataset",
        ["run", "--dataset", "kriegeskorte"],
        2,
        "unknown dataset 'kriegeskorte'; did you mean 'kriegeskorte2008'",
    ),
    (
        "unknown-backbone",
        ["run", *FAST, "--backbone", "alexnett"],
        2,
        "unknown backbone 'alexnett'; did you mean 'alexnet'",
    ),
    ("unknown-timm-model", ["run", *FAST, "--backbone", "timm:resnet1800"], 2, "resnet1800"),
    (
        "unknown-objective",
        ["run", *FAST, "--objective", "disim"],
        2,
        "unknown objective 'disim'; did you mean 'dissim'",
    ),
    ("unknown-metric", ["run", *FAST, "--metric", "spearmn"], 2, "unknown metric 'spearmn'"),
    ("unknown-executor", ["run", *FAST, "--executor", "slurmm"], 2, "unknown executor 'slurmm'"),
    ("unknown-target", ["run", *FAST, "--target", "V1"], 2, "--target V1: not a target of this run"),
    (
        "one-unknown-target",
        ["run", *FAST, "--target", "hIT", "--target", "V1"],
        2,
        "--target V1: not a target of this run",
    ),
    (
        "unknown-layer",
        ["run", *FAST, "--layer", "features.99"],
        2,
        "unknown layer 'features.99' for backbone torchvision:alexnet",
    ),
    ("unknown-loss-layer", ["run", *FAST, "--loss-layer", "conv9"], 2, "unknown layer 'conv9'"),
    ("bad-trainable", ["run", *FAST, "--trainable", "sideways"], 2, "invalid --trainable 'sideways'"),
    ("unknown-flag", ["run", "--epoch", "3"], 2, "error: rsabench run: No such option '--epoch'"),
    ("bad-choice", ["run", "--optimizer", "rmsprop"], 2, "Invalid value for '--optimizer'"),
    # -- run: repeated --------------------------------------------------------------------------
    ("repeated-seed", ["run", *FAST, "--seed", "1", "--seed", "1"], 2, "--seed 1: given twice"),
    (
        "repeated-objective",
        ["run", *FAST, "--objective", "dissim", "--objective", "dissim"],
        2,
        "--objective dissim: given twice",
    ),
    (
        "repeated-backbone-alias",
        ["run", *FAST, "--backbone", "alexnet", "--backbone", "torchvision:alexnet"],
        2,
        "given twice (= alexnet)",
    ),
    (
        "repeated-layer",
        ["run", *FAST, "--layer", "features.1", "--layer", "features.1"],
        2,
        "--layer features.1: given twice",
    ),
    ("repeated-target", ["run", *FAST, "--target", "hIT", "--target", "hIT"], 2, "--target hIT: given twice"),
    # -- run: numbers -----------------------------------------------------------------------------
    ("negative-epochs", ["run", "--epochs", "-1"], 2, "Invalid value for '--epochs'"),
    ("tiny-image", ["run", "--image-size", "8"], 2, "Invalid value for '--image-size'"),
    ("huge-image", ["run", *FAST, "--image-size", "10000"], 2, "--image-size 10000 with --batch-size 32"),
    (
        "image-too-small-for-net",
        ["run", "--weights", "random", "--image-size", "16", "--epochs", "1"],
        2,
        "--image-size 16: backbone torchvision:alexnet cannot take",
    ),
    ("lr-inf", ["run", *FAST, "--lr", "inf"], 2, "Invalid value for '--lr': 'inf' is not a finite number"),
    ("lr-zero", ["run", *FAST, "--lr", "0"], 2, "Invalid value for '--lr'"),
    (
        "weight-decay-nan",
        ["run", *FAST, "--weight-decay", "nan"],
        2,
        "Invalid value for '--weight-decay': 'nan' is not a finite number",
    ),
    ("grad-clip-negative", ["run", *FAST, "--grad-clip", "-1"], 2, "Invalid value for '--grad-clip'"),
    ("seed-over-64-bits", ["run", *FAST, "--seed", str(2**64)], 2, "Invalid value for '--seed'"),
    ("seed-negative", ["run", *FAST, "--seed", "-1"], 2, "Invalid value for '--seed'"),
    ("split-seed-negative", ["run", *FAST, "--split-seed", "-1"], 2, "Invalid value for '--split-seed'"),
    (
        "bootstrap-seed-huge",
        ["run", *FAST, "--bootstrap-seed", "99999999999999999999"],
        2,
        "Invalid value for '--bootstrap-seed'",
    ),
    ("val-fraction-nan", ["run", *FAST, "--val-fraction", "nan"], 2, "Invalid value for '--val-fraction'"),
    ("fractions-sum", ["run", *FAST, "--val-fraction", "0.8"], 2, "--val-fraction and --test-fraction"),
    ("bad-device", ["run", *FAST, "--device", "tpu"], 2, "--device must be auto, cpu or cuda"),
    ("amp-on-cpu", ["run", *FAST, "--device", "cpu", "--amp", "fp16"], 2, "--amp fp16 needs a CUDA device"),
    ("warmup-too-long", ["run", *FAST, "--warmup-epochs", "5"], 2, "--warmup-epochs"),
    # -- run: options ---------------------------------------------------------------------------
    ("dataset-option-no-equals", ["run", "--dataset-option", "noequals"], 2, "expected KEY=VALUE"),
    (
        "dataset-option-unknown",
        ["run", *FAST, "--dataset-option", "n_per_grop=200"],
        2,
        "--dataset-option n_per_grop: no dataset of this run takes option 'n_per_grop'",
    ),
    (
        "dataset-option-typo-synthetic",
        ["run", *FAST, "--dataset", "synthetic", "--dataset-option", "n_per_grop=200"],
        2,
        "did you mean 'n_per_group'",
    ),
    (
        "dataset-option-bad-value",
        ["run", *FAST, "--dataset", "synthetic", "--dataset-option", "synthetic.n_per_group=abc"],
        2,
        "option n_per_group expects",
    ),
    (
        "dataset-option-other-dataset",
        ["run", *FAST, "--dataset-option", "synthetic.noise=1"],
        2,
        "no dataset 'synthetic' in this run",
    ),
    (
        "dataset-option-twice",
        ["run", *FAST, "--dataset", "synthetic", "--dataset-option", "noise=1", "--dataset-option", "noise=2"],
        2,
        "--dataset-option noise: given twice",
    ),
    (
        "objective-option-unknown",
        ["run", *FAST, "--objective-option", "dissim.foo=1"],
        2,
        "objective 'dissim' has no option 'foo' (options: normalization, space)",
    ),
    (
        "objective-option-bad-value",
        ["run", *FAST, "--objective-option", "dissim.space=cosine"],
        2,
        "invalid space 'cosine'",
    ),
    (
        "objective-option-nobody",
        ["run", *FAST, "--objective-option", "margin=1"],
        2,
        "no objective of this run takes option 'margin'",
    ),
    # -- run: files and places ------------------------------------------------------------------
    (
        "weights-missing",
        ["run", "--weights", "/nonexistent/ckpt.pt", "--image-size", "64"],
        2,
        "--weights /nonexistent/ckpt.pt: file not found",
    ),
    (
        "weights-garbage",
        ["run", "--weights", "{tmp}/garbage.pt", "--image-size", "64", "--epochs", "1"],
        2,
        "not a readable PyTorch checkpoint",
    ),
    (
        "weights-wrong-arch",
        ["run", "--weights", "{tmp}/wrong-arch.pt", "--image-size", "64", "--epochs", "1"],
        2,
        "does not fit this backbone",
    ),
    (
        "weights-nan",
        ["run", "--weights", "{tmp}/nan-alexnet.pt", "--image-size", "64", "--epochs", "1"],
        2,
        "holds NaN or inf in 1 tensor(s) (first: features.0.weight)",
    ),
    ("runs-dir-under-a-file", ["run", *FAST, "--runs-dir", "{tmp}/a-file/runs"], 2, "not a writable directory"),
    (
        "runs-dir-in-proc",
        ["run", *FAST, "--runs-dir", "/proc/rsabench-runs"],
        2,
        "--runs-dir /proc/rsabench-runs: not a writable directory",
    ),
    ("runs-dir-is-a-file", ["run", *FAST, "--runs-dir", "{tmp}/a-file"], 2, "Invalid value for '--runs-dir'"),
    ("runs-dir-empty", ["run", *FAST, "--runs-dir", ""], 2, "expected a path, got an empty string"),
    ("cache-dir-empty", ["run", *FAST, "--cache-dir", " "], 2, "expected a path, got an empty string"),
    (
        "data-dir-empty",
        ["data", "info", "kriegeskorte2008", "--data-dir", ""],
        2,
        "expected a path, got an empty string",
    ),
    ("leaderboard-runs-dir-empty", ["leaderboard", "--runs-dir", ""], 2, "expected a path, got an empty string"),
    # -- score -----------------------------------------------------------------------------------
    (
        "score-missing-file",
        ["score", "{tmp}/nope.npy", "--dataset", "kriegeskorte2008"],
        2,
        "nope.npy: submission file not found",
    ),
    ("score-empty-file", ["score", "{tmp}/empty.npy", "--dataset", "kriegeskorte2008"], 2, "empty.npy: file is empty"),
    (
        "score-constant-rdm",
        ["score", "{tmp}/constant.npy", "--dataset", "kriegeskorte2008"],
        2,
        "the model RDM is constant",
    ),
    ("score-nan-rdm", ["score", "{tmp}/nan.npy", "--dataset", "kriegeskorte2008"], 2, "nan.npy"),
    ("score-wrong-size", ["score", "{tmp}/small.npy", "--dataset", "kriegeskorte2008"], 2, "RDM is 10x10"),
    ("score-asymmetric", ["score", "{tmp}/asymmetric.npy", "--dataset", "kriegeskorte2008"], 2, "not symmetric"),
    ("score-pickled", ["score", "{tmp}/pickled.npy", "--dataset", "kriegeskorte2008"], 2, "pickled"),
    (
        "score-unknown-split",
        ["score", "{tmp}/good.npy", "--dataset", "kriegeskorte2008", "--split", "test9"],
        2,
        "unknown split 'test9'",
    ),
    (
        "score-bad-seed",
        ["score", "{tmp}/good.npy", "--dataset", "kriegeskorte2008", "--bootstrap-seed", "-1"],
        2,
        "Invalid value for '--bootstrap-seed'",
    ),
    (
        "score-unknown-metric",
        ["score", "{tmp}/good.npy", "--dataset", "kriegeskorte2008", "--metric", "nope"],
        2,
        "unknown metric 'nope'",
    ),
    (
        "score-unknown-convention",
        ["score", "{tmp}/good.npy", "--dataset", "kriegeskorte2008", "--convention", "nope"],
        2,
        "unknown scoring convention 'nope'",
    ),
    ("score-no-dataset", ["score", "{tmp}/good.npy"], 2, "Missing option '--dataset'"),
    # -- leaderboard -----------------------------------------------------------------------------
    ("leaderboard-no-dir", ["leaderboard", "--runs-dir", "{tmp}/nope"], 2, "no such directory"),
    ("leaderboard-only-bad-records", ["leaderboard", "--runs-dir", "{tmp}/records"], 2, "no rsabench records found"),
    (
        "leaderboard-bad-format",
        ["leaderboard", "--runs-dir", "{tmp}/records", "--format", "xml"],
        2,
        "Invalid value for '--format'",
    ),
    (
        "leaderboard-output-is-dir",
        ["leaderboard", "--runs-dir", "{tmp}/records", "--output", "{tmp}"],
        2,
        "Invalid value for '--output'",
    ),
    # -- data ------------------------------------------------------------------------------------
    (
        "import-empty-zip",
        ["data", "import", "algonauts-fmri", "{tmp}/empty.zip", "--data-dir", "{data}"],
        2,
        "empty.zip: the .zip archive is empty",
    ),
    (
        "import-truncated-zip",
        ["data", "import", "algonauts-fmri", "{tmp}/truncated.zip", "--data-dir", "{data}"],
        2,
        "truncated.zip",
    ),
    (
        "import-not-a-zip",
        ["data", "import", "algonauts-fmri", "{tmp}/not-a-zip.txt", "--data-dir", "{data}"],
        2,
        "not a .zip archive or folder",
    ),
    (
        "import-unsafe-zip",
        ["data", "import", "algonauts-fmri", "{tmp}/unsafe.zip", "--data-dir", "{data}"],
        2,
        "unsafe path in archive",
    ),
    (
        "import-missing-source",
        ["data", "import", "algonauts-fmri", "{tmp}/nope.zip", "--data-dir", "{data}"],
        2,
        "nope.zip: not found",
    ),
    (
        "import-no-release",
        ["data", "import", "algonauts-fmri", "{tmp}/no-release", "--data-dir", "{data}"],
        2,
        "no Training_Data/ or Test_Data/",
    ),
    (
        "import-embedded",
        ["data", "import", "kriegeskorte2008", "{tmp}/empty.zip", "--data-dir", "{data}"],
        2,
        "is embedded in the package",
    ),
    (
        "import-data-dir-under-file",
        ["data", "import", "algonauts-fmri", "{tmp}/empty.zip", "--data-dir", "{tmp}/a-file/data"],
        2,
        "--data-dir",
    ),
    ("verify-unknown", ["data", "verify", "algonauts"], 2, "unknown dataset 'algonauts'"),
    ("info-unknown", ["data", "info", "nds"], 2, "unknown dataset 'nds'; did you mean 'nsd'"),
    # -- list ------------------------------------------------------------------------------------
    ("list-layers-no-backbone", ["list", "layers"], 2, "name a backbone"),
    ("list-unknown-kind", ["list", "widgets"], 2, "'widgets' is not one of 'datasets'"),
]


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*")] if path.exists() else []


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bad")
    bad_files(tmp)
    return tmp


@pytest.mark.parametrize("case, argv, code, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, argv, code, fragment, bad, tmp_path, capsys):
    runs, out, data = tmp_path / "runs", tmp_path / "out.md", tmp_path / "data"
    before = sorted(files_under(bad))
    argv = [a.format(tmp=bad, runs=runs, out=out, data=data) for a in argv]
    if argv[0] == "run" and "--runs-dir" not in argv:
        argv += ["--runs-dir", str(runs)]
    got, stdout, stderr = run_cli(capsys, argv)
    assert got == code, (stdout, stderr)
    assert fragment in stderr, stderr
    lines = [line for line in stderr.splitlines() if not line.startswith(("warning:", "note:"))]
    assert len(lines) == 1 and lines[0].startswith("error: " if code == 2 else "failed: "), stderr
    assert "Traceback" not in stderr
    assert not runs.exists() and not out.exists() and not data.exists(), "nothing may be written"
    assert sorted(files_under(bad)) == before, "no file appears beside the inputs"


def test_there_are_enough_cases():
    assert len(CASES) >= 40


def test_invalid_records_are_named_and_skipped(bad, capsys, tmp_path):
    """Truncated, incomplete and foreign JSON files are each named with what is wrong; valid ones still show."""
    code, out, err = run_cli(capsys, ["leaderboard", "--runs-dir", str(bad / "records")])
    assert code == 2
    assert "missing-config.json: skipped, record lacks 'config'" in err
    assert "truncated.json: skipped, not valid JSON (truncated?)" in err
    assert "foreign.json: skipped, schema 'something/2'" in err


# -- plugins that break their contract -----------------------------------------------------------
def _not_a_dataset(data_dir):
    return 42


def _misnamed(data_dir):
    from rsabench.builtin.kriegeskorte2008 import load

    return load(data_dir)


class BrokenDatasets:
    @hookimpl
    def register_datasets(self, register):
        register("returns-int", _not_a_dataset)
        register("misnamed", _misnamed)


class Impostor:
    @hookimpl
    def register_datasets(self, register):
        register("kriegeskorte2008", _not_a_dataset)


class PathEscape:
    @hookimpl
    def register_objectives(self, register):
        register("..", lambda: None)


@pytest.fixture
def with_plugins(monkeypatch):
    def install(**extra):
        built = build_plugins(extra=extra)
        monkeypatch.setattr(plugins_module, "get_plugins", lambda: built)
        return built

    return install


@pytest.mark.parametrize(
    "dataset, fragment",
    [
        (
            "returns-int",
            "dataset 'returns-int' (plugin 'broken'): its factory returned int, expected rsabench.dataset.Dataset",
        ),
        ("misnamed", "dataset 'misnamed' (plugin 'broken'): its factory returned a Dataset named 'kriegeskorte2008'"),
    ],
)
def test_plugin_returning_the_wrong_thing_is_named(dataset, fragment, with_plugins, capsys, tmp_path):
    with_plugins(broken=BrokenDatasets())
    code, _, err = run_cli(capsys, ["run", *FAST, "--dataset", dataset, "--runs-dir", str(tmp_path / "runs")])
    assert code == 1 and err.strip() == f"failed: {fragment}"
    assert not (tmp_path / "runs").exists()


def test_impostor_and_path_names_are_skipped_and_named(with_plugins, capsys):
    plugins = with_plugins(impostor=Impostor(), escape=PathEscape())
    assert plugins.datasets.entries["kriegeskorte2008"].plugin == "rsabench.datasets"
    code, out, err = run_cli(capsys, ["list", "datasets"])
    assert code == 0 and "kriegeskorte2008" in out
    assert (
        "plugin 'impostor' skipped: dataset 'kriegeskorte2008' is already registered by plugin 'rsabench.datasets'"
        in err
    )
    assert "plugin 'escape' skipped: invalid objective name '..'" in err
    assert isinstance(plugins.datasets.get("kriegeskorte2008")(None), Dataset)


# -- data verify: problems are listed one per line, exit 1, nothing is changed ----------------------
@pytest.mark.parametrize(
    "damage, fragment",
    [
        ("missing", "Algonauts 2019 data not found"),
        ("truncated-mat", "Test_Data/target_fmri.mat: cannot read as a MATLAB v7.3 (HDF5) file"),
        ("extra-image", "13 image files but the RDMs"),
        ("corrupt-image", "image_02.jpg: unreadable image"),
        ("asymmetric", "RDMs are not symmetric"),
    ],
)
def test_verify_lists_problems(damage, fragment, tmp_path, capsys):
    from algonauts_fixture import make_release, write_mat

    data = tmp_path / "data"
    if damage != "missing":
        written = make_release(data, "fmri", {"92": 12, "78": 10})
        root = data / "algonauts2019"
        images = root / "Training_Data/92_Image_Set/92images"
        if damage == "truncated-mat":
            path = root / "Test_Data/target_fmri.mat"
            path.write_bytes(path.read_bytes()[:2000])
        elif damage == "extra-image":
            (images / "image_13.jpg").write_bytes((images / "image_01.jpg").read_bytes())
        elif damage == "corrupt-image":
            (images / "image_02.jpg").write_bytes((images / "image_02.jpg").read_bytes()[:40])
        else:
            arrays = dict(written["92"])
            arrays["IT_RDMs"] = arrays["IT_RDMs"].copy()
            arrays["IT_RDMs"][0, 1, 2] += 0.5
            write_mat(root / "Training_Data/92_Image_Set/target_fmri.mat", arrays, "v7.3")
    before = sorted(files_under(tmp_path))
    code, out, err = run_cli(capsys, ["data", "verify", "algonauts-fmri", "--data-dir", str(data), "--no-checksums"])
    assert code == 2 and fragment in err, err
    assert err.strip().splitlines()[-1].startswith("algonauts-fmri: ") and "problem(s)" in err
    assert all(line.startswith(("problem: ", "algonauts-fmri: ")) for line in err.strip().splitlines()), err
    assert "Traceback" not in err and sorted(files_under(tmp_path)) == before
