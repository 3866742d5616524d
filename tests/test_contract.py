"""The plugin contract, parametrised over everything registered: a newly installed plugin is tested at once."""

from __future__ import annotations

import pytest

from rsabench import testing
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
def test_executor_contract(name):
    testing.check_executor(PLUGINS.executors.get(name))
