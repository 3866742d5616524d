"""The plugin contract, parametrised over everything registered: a newly installed plugin is tested at once."""

from __future__ import annotations

import pytest

from rsabench import datastore, testing
from rsabench.errors import DataError
from rsabench.plugins import get_plugins

PLUGINS = get_plugins()


def test_no_plugin_failed_to_load():
    assert PLUGINS.load_errors == {}


@pytest.mark.parametrize("name", PLUGINS.datasets.names())
def test_dataset_contract(name, shared_data_or_none):
    try:
        testing.check_dataset(PLUGINS.datasets.get(name), shared_data_or_none, name)
    except DataError as exc:
        pytest.skip(f"{name}: data not available here ({exc})")


@pytest.mark.parametrize("name", PLUGINS.datasets.names())
def test_dataset_data_contract(name, tmp_path):
    """`rsabench data info` describes every dataset as JSON; `data verify` finds problems exactly when the
    files are not present (an empty data dir here); neither writes anything."""
    import json

    info = datastore.info(name, tmp_path)
    json.dumps(info, default=str)
    assert info["name"] == name and isinstance(info["looks_in"], str) and isinstance(info["present"], bool)
    problems = datastore.verify(name, tmp_path)
    assert isinstance(problems, list) and all(isinstance(p, str) and "\n" not in p for p in problems)
    assert bool(problems) == (not info["present"]), problems
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", PLUGINS.backbones.names())
def test_backbone_contract(name):
    testing.check_backbone(PLUGINS.backbones.get(name))


@pytest.mark.parametrize("name", PLUGINS.objectives.names())
def test_objective_contract(name):
    testing.check_objective(PLUGINS.objectives.get(name))


@pytest.mark.parametrize("name", PLUGINS.metrics.names())
def test_metric_contract(name):
    testing.check_metric(PLUGINS.metrics.get(name))


@pytest.mark.parametrize("name", PLUGINS.executors.names())
def test_executor_contract(name, tmp_path):
    testing.check_executor(PLUGINS.executors.get(name), tmp_path / "logs")
