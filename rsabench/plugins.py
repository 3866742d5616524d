"""Plugin discovery and registration.

Every plugin, built-in or third-party, registers through the same pluggy hooks. The built-in plugins
(:data:`BUILTIN_PLUGINS`) are registered first and their names are protected: a third-party plugin that
reuses one is the plugin that is skipped. Third-party plugins come from the ``rsabench`` entry-point
group, in discovery order. Each hook registers atomically: if it raises, or any name it registers is
invalid or taken, none of its names are kept. Every problem is reported by plugin name in ``load_errors``.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
from dataclasses import dataclass, field
from types import ModuleType
from typing import Sequence

import pluggy

from . import __version__, hookspecs
from .registry import Register, Registry

KINDS = ("dataset", "backbone", "objective", "metric", "executor", "convention")
ENTRY_POINT_GROUP = "rsabench"
BUILTIN_PLUGINS = {
    "rsabench.datasets": "rsabench.builtin.datasets",
    "rsabench.backbones": "rsabench.builtin.backbones",
    "rsabench.objectives": "rsabench.builtin.objectives",
    "rsabench.metrics": "rsabench.builtin.metrics",
    "rsabench.executors": "rsabench.builtin.executors",
    "rsabench.conventions": "rsabench.builtin.conventions",
}
HOOKS = tuple(f"register_{kind}s" for kind in KINDS)


@dataclass
class Plugins:
    """All registries, filled from the installed plugins."""

    registries: dict[str, Registry]
    versions: dict[str, str] = field(default_factory=dict)
    load_errors: dict[str, list[str]] = field(default_factory=dict)

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

    @property
    def conventions(self) -> Registry:
        return self.registries["convention"]

    def error(self, plugin: str, message: str) -> None:
        self.load_errors.setdefault(plugin, []).append(message)

    def used_versions(self, **names: str | Sequence[str]) -> dict[str, str]:
        """``{plugin: version}`` of the plugins providing the given ``kind=name`` (or ``kind=[names]``)
        objects (for a cell's hash)."""
        used = {
            self.registries[kind].plugin_of(name)
            for kind, given in names.items()
            for name in ([given] if isinstance(given, str) else given)
        }
        return {p: self.versions.get(p, "unknown") for p in sorted(used) if p}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Hook implementations of ``plugin`` that match no rsabench hook (a misspelt name is never silently ignored)."""
    problems = []
    for caller in pm.get_hookcallers(plugin) or []:
        if not caller.has_spec():
            close = difflib.get_close_matches(caller.name, HOOKS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"unknown hook {caller.name!r}{hint} (rsabench hooks: {', '.join(HOOKS)})")
    return problems


def _register(pm: pluggy.PluginManager, plugins: Plugins, name: str, obj: object, version: str) -> None:
    try:
        pm.register(obj, name=name)
    except Exception as exc:  # pluggy validates hook signatures here
        plugins.error(name, _describe(exc))
        return
    problems = _unknown_hooks(pm, obj)
    if problems:
        pm.unregister(obj)
        for p in problems:
            plugins.error(name, p)
        return
    plugins.versions[name] = version


def _entry_point_plugins(pm: pluggy.PluginManager, plugins: Plugins) -> None:
    builtin_modules = set(BUILTIN_PLUGINS.values())
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value in builtin_modules:  # an old install's metadata: the built-ins are registered above
            continue
        name = f"{ep.dist.name}.{ep.name}" if ep.dist else ep.name
        if name in plugins.versions or pm.has_plugin(name):
            plugins.error(name, "an installed plugin with this name is already registered")
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must never take the CLI down
            plugins.error(name, _describe(exc))
            continue
        _register(pm, plugins, name, module, ep.dist.version if ep.dist else "unknown")


def build_plugins(extra: dict[str, ModuleType | object] | None = None) -> Plugins:
    """Register the built-ins, then entry-point plugins (then ``extra`` objects, for tests), and run
    every registration hook: built-ins first, one plugin at a time, each hook all or nothing."""
    pm = pluggy.PluginManager("rsabench")
    pm.add_hookspecs(hookspecs)
    plugins = Plugins({kind: Registry(kind) for kind in KINDS})
    for name, module in BUILTIN_PLUGINS.items():
        _register(pm, plugins, name, importlib.import_module(module), __version__)
    _entry_point_plugins(pm, plugins)
    for name, obj in (extra or {}).items():
        _register(pm, plugins, name, obj, getattr(obj, "__version__", "local"))
    order = [name for name, _ in pm.list_name_plugin() if name in plugins.versions]
    order.sort(key=lambda n: n not in BUILTIN_PLUGINS)  # stable: built-ins first, then discovery order
    for kind in KINDS:
        impls = {impl.plugin_name: impl for impl in getattr(pm.hook, f"register_{kind}s").get_hookimpls()}
        for name in order:
            if name in impls:
                _run_hook(plugins, plugins[kind], name, impls[name].function)
    return plugins


def _run_hook(plugins: Plugins, registry: Registry, plugin: str, function) -> None:
    """Call one registration hook; commit what it staged only if it returned and every name is free."""
    register = Register(registry, plugin)
    try:
        function(register)
    except Exception as exc:
        plugins.error(
            plugin, f"register_{registry.kind}s raised {_describe(exc)}; none of its {registry.kind}s were registered"
        )
        return
    problems = registry.conflicts(register.staged, plugin)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        plugins.error(plugin, f"{problems[0]}{more}; none of its {registry.kind}s were registered")
        return
    registry.commit(register.staged)


@functools.lru_cache(maxsize=1)
def get_plugins() -> Plugins:
    """The process-wide plugin set (loaded once)."""
    return build_plugins()
