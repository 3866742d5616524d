"""Name registries for plugins: exact names, aliases, ``prefix:`` namespaces, wildcard listing, did-you-mean."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import UsageError


@dataclass(frozen=True)
class Entry:
    """One registered plugin object."""

    name: str
    factory: Callable[..., Any]
    summary: str = ""
    plugin: str = ""
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Namespace:
    """A family of names ``prefix:rest`` resolved on demand (``timm:resnet18``)."""

    prefix: str
    resolver: Callable[[str], Callable[..., Any]]
    lister: Callable[[str], list[str]]
    summary: str = ""
    plugin: str = ""


@dataclass
class Registry:
    """Registered objects of one kind ("dataset", "backbone", ...)."""

    kind: str
    entries: dict[str, Entry] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        for key in (entry.name, *entry.aliases):
            if key in self.entries or key in self.aliases:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
        self.entries[entry.name] = entry
        for alias in entry.aliases:
            self.aliases[alias] = entry.name

    def add_namespace(self, namespace: Namespace) -> None:
        if namespace.prefix in self.namespaces:
            raise ValueError(f"{self.kind} namespace {namespace.prefix!r} is registered twice")
        self.namespaces[namespace.prefix] = namespace

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names (not aliases) matching an fnmatch pattern, sorted."""
        return sorted(n for n in self.entries if fnmatch.fnmatch(n, pattern))

    def canonical(self, name: str) -> str:
        """The canonical name for ``name`` (resolving aliases); raises UsageError with suggestions."""
        if name in self.entries:
            return name
        if name in self.aliases:
            return self.aliases[name]
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self.namespaces and rest:
            return name
        known = [*self.entries, *self.aliases, *(f"{p}:" for p in self.namespaces)]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        listing = f" (see `rsabench list {self.kind}s`)"
        raise UsageError(f"unknown {self.kind} {name!r}{hint}{listing}")

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered for ``name`` (an alias or ``prefix:rest`` also works)."""
        name = self.canonical(name)
        if name in self.entries:
            return self.entries[name].factory
        prefix, _, rest = name.partition(":")
        return self.namespaces[prefix].resolver(rest)

    def summary(self, name: str) -> str:
        name = self.canonical(name)
        if name in self.entries:
            return self.entries[name].summary
        return self.namespaces[name.partition(":")[0]].summary


class Register:
    """The ``register`` callable handed to a plugin's hook implementation."""

    def __init__(self, registry: Registry, plugin: str) -> None:
        self._registry = registry
        self._plugin = plugin

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        summary: str = "",
        aliases: tuple[str, ...] | list[str] = (),
    ) -> None:
        doc = summary or (factory.__doc__ or "").strip().splitlines()[0:1]
        if isinstance(doc, list):
            doc = doc[0] if doc else ""
        self._registry.add(Entry(name, factory, doc, self._plugin, tuple(aliases)))

    def namespace(
        self,
        prefix: str,
        resolver: Callable[[str], Callable[..., Any]],
        lister: Callable[[str], list[str]],
        summary: str = "",
    ) -> None:
        self._registry.add_namespace(Namespace(prefix, resolver, lister, summary, self._plugin))


def lazy(path: str) -> Callable[..., Any]:
    """A factory that imports ``"package.module:attr"`` only when first called (keeps registration cheap)."""
    module_name, _, attr = path.partition(":")

    def factory(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module_name), attr)(*args, **kwargs)

    factory.__qualname__ = factory.__name__ = f"lazy({path})"
    factory.__doc__ = f"Imports and calls {path}."
    factory.__module__ = module_name  # where the implementation lives (used to find a module's describe())
    return factory
