"""Registry and plugin loading: wildcards, aliases, namespaces, did-you-mean, broken plugins, laziness."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rsabench.errors import UsageError
from rsabench.hookspecs import hookimpl
from rsabench.plugins import build_plugins
from rsabench.registry import Entry, Registry


def _registry(*entries: Entry) -> Registry:
    reg = Registry("backbone")
    assert not reg.conflicts(list(entries), "test")
    reg.commit(list(entries))
    return reg


def test_wildcards_aliases_and_suggestions():
    reg = _registry(
        Entry("vgg16", lambda: 1, aliases=("vgg",), plugin="test"),
        Entry("vgg19", lambda: 2, plugin="test"),
        Entry("alexnet", lambda: 3, plugin="test"),
    )
    assert reg.names("vgg*") == ["vgg16", "vgg19"]
    assert reg.get("vgg")() == 1
    with pytest.raises(UsageError, match=r"did you mean 'alexnet'"):
        reg.get("alexnt")
    with pytest.raises(UsageError, match="unknown backbone 'zzz'"):
        reg.get("zzz")
    assert reg.conflicts([Entry("vgg16", lambda: 4, plugin="other")], "other") == [
        "backbone 'vgg16' is already registered by plugin 'test'"
    ]
    assert "already registered" in reg.conflicts([Entry("new", lambda: 4, aliases=("vgg",))], "other")[0]


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", "../escape", "", "x y", "a\\b", "-dash"])
def test_names_that_could_name_a_path_are_refused(name):
    assert "invalid backbone name" in Registry("backbone").conflicts([Entry(name, lambda: 1)], "p")[0]


class GoodPlugin:
    @hookimpl
    def register_objectives(self, register):
        register("toy", lambda: "toy-objective", summary="a toy")


class RaisingPlugin:
    @hookimpl
    def register_metrics(self, register):
        register("half-registered", lambda: None)
        raise RuntimeError("boom")


class ImpostorPlugin:
    """Registers a new dataset and a built-in's name in one hook: the whole hook is refused."""

    @hookimpl
    def register_datasets(self, register):
        register("my-fine-dataset", lambda data_dir: None)
        register("kriegeskorte2008", lambda data_dir: "impostor")

    @hookimpl
    def register_objectives(self, register):
        register("impostor-objective", lambda: None)


class NamespaceThief:
    @hookimpl
    def register_backbones(self, register):
        register("timm:resnet18", lambda: "stolen")


class MisspeltPlugin:
    @hookimpl
    def register_dataset(self, register):  # singular: not an rsabench hook
        register("never", lambda data_dir: None)


class BadNamePlugin:
    @hookimpl
    def register_datasets(self, register):
        register("..", lambda data_dir: None)


def test_external_plugin_registers_like_builtins_and_broken_one_is_skipped():
    plugins = build_plugins(extra={"good": GoodPlugin(), "bad": RaisingPlugin()})
    assert plugins.objectives.get("toy")() == "toy-objective"
    assert plugins.objectives.entries["toy"].plugin == "good"
    assert "frozen" in plugins.objectives.names()  # built-ins still there
    assert "bad" in plugins.load_errors and "boom" in plugins.load_errors["bad"][0]
    assert "half-registered" not in plugins.metrics.names()  # all or nothing per hook
    assert "spearman" in plugins.metrics.names()


def test_builtins_cannot_be_hijacked_and_the_impostor_is_named():
    plugins = build_plugins(extra={"impostor": ImpostorPlugin(), "thief": NamespaceThief()})
    assert plugins.datasets.entries["kriegeskorte2008"].plugin == "rsabench.datasets"
    assert set(plugins.datasets.names()) >= {"kriegeskorte2008", "synthetic", "nsd", "algonauts-fmri", "algonauts-meg"}
    assert "my-fine-dataset" not in plugins.datasets.names()
    assert plugins.load_errors["impostor"] == [
        "dataset 'kriegeskorte2008' is already registered by plugin 'rsabench.datasets'; none of its datasets were "
        "registered"
    ]
    assert "impostor-objective" in plugins.objectives.names()  # its other hook is unaffected
    assert plugins.load_errors["thief"] == [
        "backbone 'timm:resnet18' is already registered by plugin 'rsabench.backbones'; none of its backbones were "
        "registered"
    ]
    assert plugins.backbones.plugin_of("timm:resnet18") == "rsabench.backbones"
    assert not any(n.startswith("rsabench") for n in plugins.load_errors)


def test_misspelt_hook_and_path_like_names_are_reported():
    plugins = build_plugins(extra={"typo": MisspeltPlugin(), "badname": BadNamePlugin()})
    assert "unknown hook 'register_dataset'; did you mean 'register_datasets'?" in plugins.load_errors["typo"][0]
    assert "invalid dataset name '..'" in plugins.load_errors["badname"][0]
    assert "never" not in plugins.datasets.names() and ".." not in plugins.datasets.names()


def test_cell_hash_covers_only_the_plugins_a_cell_uses():
    base = build_plugins()
    more = build_plugins(extra={"good": GoodPlugin(), "bad": RaisingPlugin()})
    kw = dict(dataset="kriegeskorte2008", backbone="alexnet", objective="dissim", metric="spearman")
    assert base.used_versions(**kw) == more.used_versions(**kw)
    assert set(base.used_versions(**kw)) == {
        "rsabench.datasets",
        "rsabench.backbones",
        "rsabench.objectives",
        "rsabench.metrics",
    }
    assert (
        more.used_versions(dataset="kriegeskorte2008", backbone="alexnet", objective="toy", metric="spearman")["good"]
        == "local"
    )


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
    out = subprocess.run(
        [sys.executable, "-m", "rsabench.cli", "list", "objectives"], capture_output=True, text=True, env=env
    )
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
