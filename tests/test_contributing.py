"""CONTRIBUTING.md's plugin examples, extracted from the document and run, so the document cannot rot."""

from __future__ import annotations

import re
import sys
import types
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from precision import F64, ttest_p_tolerance
from scipy.spatial.distance import squareform
from scipy.stats import spearmanr, ttest_1samp

import rsabench.plugins as plugins_module
from rsabench import conventions
from rsabench.hookspecs import hookimpl
from rsabench.plugins import build_plugins
from rsabench.registry import lazy

DOC = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def snippet(first_line: str) -> str:
    """The one ```python block of CONTRIBUTING.md whose first line is ``first_line``."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)]
    found = [b for b in blocks if b.splitlines()[0] == first_line]
    assert len(found) == 1, f"CONTRIBUTING.md: expected one python block starting {first_line!r}, found {len(found)}"
    return found[0]


def module(name: str, source: str, **names: object) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(names)
    exec(compile(source, f"CONTRIBUTING.md ({name})", "exec"), mod.__dict__)
    return mod


def sq(x: np.ndarray) -> np.ndarray:
    return squareform(x, force="tovector", checks=False)


@pytest.fixture(scope="module")
def rdms() -> np.ndarray:
    """Real human-IT RDMs (4 subjects x 2 sessions, 92 x 92), embedded in the package."""
    with np.load(str(resources.files("rsabench.data").joinpath("kriegeskorte2008.npz"))) as npz:
        return npz["rdms"].astype(np.float64)


def install_example(monkeypatch, submodule: str, hooks_marker: str) -> types.ModuleType:
    """The example's ``my_plugin.<submodule>`` importable, its hooks (the snippet ``hooks_marker``) a plugin."""
    package = types.ModuleType("my_plugin")
    package.__path__ = []
    part = module(f"my_plugin.{submodule}", snippet(f"# my_plugin/{submodule}.py"))
    setattr(package, submodule, part)
    monkeypatch.setitem(sys.modules, "my_plugin", package)
    monkeypatch.setitem(sys.modules, f"my_plugin.{submodule}", part)
    hooks = module("my_plugin", snippet(hooks_marker), hookimpl=hookimpl, lazy=lazy)
    built = build_plugins(extra={"my_plugin": hooks})
    monkeypatch.setattr(plugins_module, "get_plugins", lambda: built)
    assert built.load_errors == {}
    return part


@pytest.fixture()
def installed(monkeypatch):
    """The example's scoring module importable as ``my_plugin.scoring``, its hook registered as a plugin."""
    return install_example(monkeypatch, "scoring", "# my_plugin/__init__.py (continued)")


def test_the_convention_example_scores_squared_correlations_with_signed_rho(installed, rdms):
    with np.load(str(resources.files("rsabench.data").joinpath("kriegeskorte2008.npz"))) as npz:
        animate = npz["category_vectors"][:, 0]
    model = (animate[:, None] == animate[None, :]).astype(np.float64)  # 1 - animacy RDM: anti-correlated with IT
    scorer = conventions.scorer_for("my-convention", "kriegeskorte2008", "IT", "92", rdms, "spearman")
    assert isinstance(scorer, installed.MyScorer)
    [score] = scorer.score_many(model[None])
    assert scorer.score(model) == score

    # the definitions, plainly with scipy
    subjects = [[sq(rdms[s, k]) for k in range(2)] for s in range(4)]
    signed = np.array([np.mean([spearmanr(sq(model), v)[0] for v in subject]) for subject in subjects])
    everyone = np.mean([v for subject in subjects for v in subject], axis=0)
    upper = np.mean([np.mean([spearmanr(everyone, v)[0] for v in subject]) ** 2 for subject in subjects])
    others = [np.mean([v for t in subjects if t is not subject for v in t], axis=0) for subject in subjects]
    lower = np.mean(
        [np.mean([spearmanr(o, v)[0] for v in subject]) ** 2 for o, subject in zip(others, subjects, strict=True)]
    )
    assert np.all(signed < 0)  # a squaring convention that lost the sign would fail below
    # float64 Spearman over 4186 pairs (ranks exact), |r| <= 1, squared, means of 4, scipy vs us: precision.F64
    np.testing.assert_allclose(score.extra["rho_per_subject"], signed, rtol=0, atol=F64)
    assert score.rho == pytest.approx(signed.mean(), abs=F64)
    np.testing.assert_allclose(score.per_subject, signed**2, rtol=0, atol=2 * F64)  # (r + e)² - r² <= 2|e|
    assert score.raw == pytest.approx(np.mean(signed**2), abs=2 * F64)
    assert score.ceiling_upper == pytest.approx(upper, abs=2 * F64)
    assert score.ceiling_lower == pytest.approx(lower, abs=2 * F64) and lower < upper
    # p-values: t-tests over subjects of the values (R²) and of the signed ρ, each off by ttest_p_tolerance
    p_r2, p_rho = ttest_1samp(signed**2, 0)[1], ttest_1samp(signed, 0)[1]
    assert score.extra["p_value"] == pytest.approx(p_r2, abs=ttest_p_tolerance(signed**2, 2 * F64))
    assert score.extra["rho_p_value"] == pytest.approx(p_rho, abs=ttest_p_tolerance(signed, F64))
    assert score.convention == "my-convention"
    assert score.extra["ceiling_source"] == installed.MyScorer.ceiling_source
    assert "rsatoolbox" not in score.extra["ceiling_source"]


def test_the_data_source_example_describes_and_verifies(tmp_path):
    data = module("my_plugin.data", snippet("# my_plugin/data.py"))
    info = data.DATA.describe(tmp_path)
    assert info["present"] is False and data.DATA.verify(tmp_path) == [f"{tmp_path / 'mine' / 'rdms.npy'}: missing"]
    assert {"looks_in", "present", "files", "license", "citation", "options"} <= set(info)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "rdms.npy").write_bytes(b"")
    assert data.DATA.describe(tmp_path)["present"] is True and data.DATA.verify(tmp_path) == []


def test_the_executor_example_runs_a_sweep(monkeypatch, capsys, tmp_path):
    from cli_helpers import record_files, run_cli

    install_example(monkeypatch, "executor", "# my_plugin/__init__.py (executor)")
    runs = tmp_path / "runs"
    argv = ["run", "--dataset", "synthetic", "--objective", "frozen", "--weights", "random", "--image-size", "64"]
    code, _, err = run_cli(capsys, [*argv, "--runs-dir", str(runs), "--executor", "command", "--jobs", "2"])
    assert code == 0, err
    assert "2 to run on command (2 at once)" in err and len(record_files(runs)) == 2
    assert len(list((runs / "logs" / "command").glob("*.log"))) == 2
    code, _, err = run_cli(capsys, [*argv, "--runs-dir", str(runs), "--executor", "command", "--lr", "1e30",
                                    "--objective", "dissim", "--epochs", "1"])  # fmt: skip
    assert code == 1 and "training diverged" in err  # the worker's failure record, reported through the example
