"""Plugin discovery: every plugin, built-in or third-party, comes in through the ``rsabench`` entry-point group.

A plugin that fails to import, or whose hooks raise, is reported by name in ``load_errors`` and skipped.
"""

from __future__ import annotations

import functools
import importlib.metadata
from dataclasses import dataclass, field
from types import ModuleType

import pluggy

from . import hookspecs
from .registry import Register, Registry

KINDS = ("dataset", "backbone", "objective", "metric", "executor")
ENTRY_POINT_GROUP = "rsabench"


@dataclass
class Plugins:
    """All registries, filled from the installed plugins."""

    registries: dict[str, Registry]
    versions: dict[str, str] = field(default_factory=dict)
    load_errors: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, kind: str) -> Registry:
        return self.registries[kind]

    @property
    def datasets(self) -> Registry:
        return self.registries["dataset"]

    @property
    def backbones(self) -> Registry:
        return self.registries["backbone"]

    @property
    def objectives(self) -> Registry:
        return self.registries["objective"]

    @property
    def metrics(self) -> Registry:
        return self.registries["metric"]

    @property
    def executors(self) -> Registry:
        return self.registries["executor"]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def build_plugins(extra: dict[str, ModuleType | object] | None = None) -> Plugins:
    """Load entry-point plugins (plus ``extra`` objects, for tests) and run their registration hooks."""
    pm = pluggy.PluginManager("rsabench")
    pm.add_hookspecs(hookspecs)
    plugins = Plugins({kind: Registry(kind) for kind in KINDS})

    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        name = f"{ep.dist.name}.{ep.name}" if ep.dist else ep.name
        try:
            module = ep.load()
            pm.register(module, name=name)
        except Exception as exc:  # a broken plugin must never take the CLI down
            plugins.load_errors[name] = _describe(exc)
            continue
        if ep.dist is not None:
            plugins.versions[name] = ep.dist.version
    for name, obj in (extra or {}).items():
        pm.register(obj, name=name)
        plugins.versions.setdefault(name, getattr(obj, "__version__", "local"))

    for kind in KINDS:
        hook = getattr(pm.hook, f"register_{kind}s")
        for impl in hook.get_hookimpls():
            register = Register(plugins[kind], impl.plugin_name)
            try:
                impl.function(register)
            except Exception as exc:
                plugins.load_errors[impl.plugin_name] = _describe(exc)
    return plugins


@functools.lru_cache(maxsize=1)
def get_plugins() -> Plugins:
    """The process-wide plugin set (loaded once)."""
    return build_plugins()
