"""Registry and plugin loading: wildcards, aliases, namespaces, did-you-mean, broken plugins, laziness."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rsabench.errors import UsageError
from rsabench.hookspecs import hookimpl
from rsabench.plugins import build_plugins
from rsabench.registry import Entry, Registry


def test_wildcards_aliases_and_suggestions():
    reg = Registry("backbone")
    reg.add(Entry("vgg16", lambda: 1, aliases=("vgg",)))
    reg.add(Entry("vgg19", lambda: 2))
    reg.add(Entry("alexnet", lambda: 3))
    assert reg.names("vgg*") == ["vgg16", "vgg19"]
    assert reg.get("vgg")() == 1
    with pytest.raises(UsageError, match=r"did you mean 'alexnet'"):
        reg.get("alexnt")
    with pytest.raises(UsageError, match="unknown backbone 'zzz'"):
        reg.get("zzz")
    with pytest.raises(ValueError, match="registered twice"):
        reg.add(Entry("vgg16", lambda: 4))


class GoodPlugin:
    @hookimpl
    def register_objectives(self, register):
        register("toy", lambda: "toy-objective", summary="a toy")


class RaisingPlugin:
    @hookimpl
    def register_metrics(self, register):
        raise RuntimeError("boom")


def test_external_plugin_registers_like_builtins_and_broken_one_is_skipped():
    plugins = build_plugins(extra={"good": GoodPlugin(), "bad": RaisingPlugin()})
    assert plugins.objectives.get("toy")() == "toy-objective"
    assert plugins.objectives.entries["toy"].plugin == "good"
    assert "frozen" in plugins.objectives.names()  # built-ins still there
    assert "bad" in plugins.load_errors and "boom" in plugins.load_errors["bad"]
    assert "spearman" in plugins.metrics.names()


def test_entry_point_that_fails_to_import_is_reported_by_name(tmp_path, monkeypatch):
    dist = tmp_path / "brokenplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[rsabench]\nbroken = brokenplugin_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = build_plugins()
    assert any(k.startswith("brokenplugin") for k in plugins.load_errors)
    assert "kriegeskorte2008" in plugins.datasets.names()


def test_cli_reports_broken_plugin_without_crashing(tmp_path):
    dist = tmp_path / "brokenplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[rsabench]\nbroken = brokenplugin_does_not_exist\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": ""}
    out = subprocess.run([sys.executable, "-m", "rsabench.cli", "list", "objectives"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "brokenplugin.broken" in out.stderr and "skipped" in out.stderr
    assert "frozen" in out.stdout


def test_import_and_list_do_not_import_torch():
    code = (
        "import sys; from rsabench.cli import main\n"
        "try:\n    main(['list'])\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in ('torch', 'torchvision', 'timm') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_lazy_factories_import_on_call():
    plugins = build_plugins()
    factory = plugins.datasets.get("kriegeskorte2008")
    assert "lazy(" in factory.__name__
