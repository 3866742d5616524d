"""The command line end to end: the acceptance run, reproducibility, leaderboard formats and user errors."""

from __future__ import annotations

import json
import urllib.error

import pytest
from precision import U64

from rsabench.cli import main

RUN = [
    "run",
    "--dataset",
    "kriegeskorte2008",
    "--backbone",
    "alexnet",
    "--objective",
    "frozen",
    "--objective",
    "dissim",
    "--weights",
    "random",
    "--epochs",
    "2",
    "--image-size",
    "64",
]
KEYS = {
    "dataset",
    "target",
    "split",
    "backbone",
    "objective",
    "seed",
    "layer",
    "raw",
    "ceiling_lower",
    "ceiling_upper",
    "normalized",
    "ci_low",
    "ci_high",
    "convention",
    "cell",
}


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The acceptance command, run twice into separate run directories."""
    dirs = [tmp_path_factory.mktemp(f"runs{i}") for i in range(2)]
    results = []
    for d in dirs:
        try:
            main([*RUN, "--runs-dir", str(d), "--format", "json"])
        except SystemExit as exc:
            assert not exc.code
        results.append(d)
    return results


def leaderboard_json(capsys, runs_dir) -> list[dict]:
    code, out, err = cli(capsys, "leaderboard", "--runs-dir", str(runs_dir), "--format", "json")
    assert code == 0, err
    return json.loads(out)


def test_acceptance_run_rows_keys_and_intervals(two_runs, capsys):
    rows = leaderboard_json(capsys, two_runs[0])
    assert {r["objective"] for r in rows} == {"frozen", "dissim"}
    for r in rows:
        assert KEYS <= set(r)
        assert r["dataset"] == "kriegeskorte2008" and r["target"] == "hIT" and r["split"] == "test"
        assert r["ci_low"] <= r["raw"] <= r["ci_high"]
        assert r["ceiling_lower"] < r["ceiling_upper"]
        # the scorer computes the same expression on the same floats (JSON round-trips them exactly): bit-identical
        # in fact; 2 ulps would allow another association
        assert r["normalized"] == pytest.approx(100 * r["raw"] / r["ceiling_upper"], rel=2 * U64)
    dissim = next(r for r in rows if r["objective"] == "dissim")
    assert (
        dissim["delta_vs_frozen"] is not None
        and dissim["delta_ci_low"] <= dissim["delta_vs_frozen"] <= dissim["delta_ci_high"]
    )


def test_same_command_twice_gives_identical_numbers(two_runs, capsys):
    a, b = (leaderboard_json(capsys, d) for d in two_runs)
    strip = lambda rows: [{k: v for k, v in r.items()} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)  # same seeds, same operations, same machine: bit-identical


def test_rerun_uses_cache(two_runs, capsys):
    code, out, err = cli(capsys, *RUN, "--runs-dir", str(two_runs[0]), "--format", "csv")
    assert code == 0 and "2 cached, 0 to run" in err
    assert out.splitlines()[0].startswith("dataset,target,split")


def test_leaderboard_formats_and_output_file(two_runs, capsys, tmp_path):
    code, out, _ = cli(capsys, "leaderboard", "--runs-dir", str(two_runs[0]), "--format", "markdown")
    assert code == 0 and out.startswith("| dataset |")
    target = tmp_path / "lb" / "board.md"
    code, _, _ = cli(
        capsys, "leaderboard", "--runs-dir", str(two_runs[0]), "--format", "markdown", "--output", str(target)
    )
    assert code == 0 and target.read_text() == out


def test_plan_shows_cached_cells(two_runs, capsys):
    code, out, _ = cli(capsys, "plan", *RUN[1:], "--runs-dir", str(two_runs[0]))
    assert code == 0 and "2 cached, 0 to run" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--dataset", "kriegeskorte"], "unknown dataset 'kriegeskorte'; did you mean 'kriegeskorte2008'"),
        (
            ["run", "--backbone", "alexnett", "--weights", "random"],
            "unknown backbone 'alexnett'; did you mean 'alexnet'",
        ),
        (["run", "--objective", "disim", "--weights", "random"], "unknown objective 'disim'; did you mean 'dissim'"),
        (["run", "--metric", "spearmn", "--weights", "random"], "unknown metric 'spearmn'"),
        (["run", "--weights", "/nonexistent/ckpt.pt"], "--weights /nonexistent/ckpt.pt: file not found"),
        (["run", "--epochs", "-1"], "--epochs"),
        (["run", "--image-size", "8"], "--image-size"),
        (["run", "--device", "tpu", "--weights", "random"], "--device must be auto, cpu or cuda"),
        (["run", "--dataset-option", "noequals"], "expected KEY=VALUE"),
        (
            ["run", "--target", "V1", "--weights", "random"],
            "--target V1: not a target of this run (dataset 'kriegeskorte2008' has targets hIT)",
        ),
        (["run", "--val-fraction", "0.9", "--weights", "random"], "--val-fraction and --test-fraction"),
        (["leaderboard", "--runs-dir", "/nonexistent/runs"], "--runs-dir /nonexistent/runs: no such directory"),
        (["list", "layers"], "name a backbone"),
        (["run", "--objective-option", "dissim.space=cosine", "--weights", "random"], "invalid space 'cosine'"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv, message, capsys, tmp_path):
    code, out, err = cli(capsys, *argv, *(["--runs-dir", str(tmp_path / "r")] if argv[0] == "run" else []))
    assert code == 2, (out, err)
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*.json"))


def test_trainable_policy_error(capsys, tmp_path):
    code, _, err = cli(capsys, *RUN, "--trainable", "sideways", "--objective", "dissim", "--runs-dir", str(tmp_path))
    assert code == 2 and "invalid --trainable 'sideways'" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.json"))


def test_imagenet_weights_unavailable_is_a_clear_error(capsys, tmp_path, monkeypatch):
    import torchvision.models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvm.WeightsEnum, "get_state_dict", offline)
    code, _, err = cli(capsys, "run", "--objective", "frozen", "--runs-dir", str(tmp_path / "r"))
    assert code == 2
    assert "ImageNet weights not available" in err and "alexnet-owt-7be5be79.pth" in err and "--weights random" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*.json"))


def test_unknown_layer_names_fail_before_anything_runs(capsys, tmp_path):
    code, _, err = cli(capsys, *RUN, "--loss-layer", "features.99", "--runs-dir", str(tmp_path))
    assert code == 2 and "unknown layer 'features.99' for backbone torchvision:alexnet" in err
    assert not list(tmp_path.rglob("*.json"))
