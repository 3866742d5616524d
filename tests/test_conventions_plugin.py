"""Conventions are plugins: built-ins registered like third-party ones, a dataset plugin brings its own."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

import rsabench.plugins as plugins_module
from rsabench import conventions, protocol
from rsabench.errors import PluginError, UsageError
from rsabench.hookspecs import hookimpl
from rsabench.plugins import build_plugins
from rsabench.rsa import SpearmanMetric
from rsabench.scoring import TargetScorer


class SignFlipScorer(TargetScorer):
    """A third-party convention: the computed values, negated (easy to tell apart)."""

    convention = "toy-negated"

    def _per_subject(self, model_vectors: np.ndarray) -> np.ndarray:
        return -super()._per_subject(model_vectors)


class ToyConventionPlugin:
    @hookimpl
    def register_conventions(self, register):
        def factory(*, dataset, target, group, rdms, metric, index=None, bootstrap_seed=0, bootstrap_samples=1000):
            return SignFlipScorer(rdms, metric, index, bootstrap_seed, bootstrap_samples)

        register("toy-negated", factory, summary="computed, negated (a test plugin)")


class Thief:
    @hookimpl
    def register_conventions(self, register):
        register("computed", lambda **kw: None, summary="steals a built-in name")


class Broken:
    @hookimpl
    def register_conventions(self, register):
        register("toy-broken", lambda **kw: "not a scorer")


@pytest.fixture(scope="module")
def rdms() -> np.ndarray:
    with np.load(str(resources.files("rsabench.data").joinpath("kriegeskorte2008.npz"))) as npz:
        return npz["rdms"].astype(np.float64)


@pytest.fixture()
def installed(monkeypatch):
    built = build_plugins(extra={"toy": ToyConventionPlugin(), "thief": Thief(), "broken": Broken()})
    monkeypatch.setattr(plugins_module, "get_plugins", lambda: built)
    return built


def test_builtin_conventions_come_from_the_builtin_plugin():
    registry = build_plugins().conventions
    assert registry.names() == ["algonauts2019", "computed"]
    assert {registry.plugin_of(n) for n in registry.names()} == {"rsabench.conventions"}


def test_a_plugin_convention_scores(installed, rdms):
    model = rdms[0, 0]
    mine = conventions.scorer_for("toy-negated", "kriegeskorte2008", "IT", "92", rdms, SpearmanMetric())
    ours = conventions.scorer_for("computed", "kriegeskorte2008", "IT", "92", rdms, SpearmanMetric())
    a, b = mine.score(model), ours.score(model)
    assert a.convention == "toy-negated" and b.convention == "computed"
    assert a.per_subject == [-v for v in b.per_subject]  # negation is exact
    assert "toy-negated" in conventions.CONVENTIONS and installed.conventions.plugin_of("toy-negated") == "toy"


def test_protocol_looks_conventions_up_in_the_registry(installed, rdms):
    from rsabench.dataset import Dataset, StimulusGroup, Target

    ds = Dataset("toy-data", {"92": StimulusGroup("92", [str(i) for i in range(92)])}, [Target("IT", "92", rdms)], [])
    scorer = protocol.make_scorer("toy-negated", ds, "IT", "92", SpearmanMetric(), np.arange(40), 0)
    assert isinstance(scorer, SignFlipScorer) and len(scorer.index) == 40


def test_builtin_names_are_protected_and_bad_factories_reported(installed, rdms):
    assert installed.conventions.plugin_of("computed") == "rsabench.conventions"
    assert "already registered by plugin 'rsabench.conventions'" in installed.load_errors["thief"][0]
    with pytest.raises(PluginError, match="plugin 'broken': convention 'toy-broken' returned str"):
        conventions.scorer_for("toy-broken", "x", "IT", "92", rdms, SpearmanMetric())


def test_unknown_convention_is_a_one_line_usage_error(rdms):
    with pytest.raises(UsageError, match=r"unknown scoring convention 'computd'; did you mean 'computed'\?") as e:
        conventions.scorer_for("computd", "x", "IT", "92", rdms, "spearman")
    assert "\n" not in str(e.value)
