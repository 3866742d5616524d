"""Name registries for plugins: exact names, aliases, ``prefix:`` namespaces, wildcard listing, did-you-mean.

A plugin's hook registers into a :class:`Register`, which only *stages* its names; the plugin loader
commits them all at once or none (:meth:`Registry.commit`), so a hook that fails half-way leaves nothing
behind, and a name that is already taken (by a built-in above all) makes the newcomer the one skipped.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import UsageError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*(:[A-Za-z0-9][A-Za-z0-9_.+-]*)?$")
"""Registered names and aliases: letters, digits and ``_.+-`` (not first), optionally ``prefix:name``.
They become parts of file names under ``--runs-dir``, so nothing that could name a path is allowed."""
PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


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

    def owner(self, key: str) -> str | None:
        """The plugin that holds ``key`` as a name, an alias or a namespace prefix (None: free)."""
        if key in self.entries:
            return self.entries[key].plugin
        if key in self.aliases:
            return self.entries[self.aliases[key]].plugin
        prefix, sep, _ = key.partition(":")
        if sep and prefix in self.namespaces:
            return self.namespaces[prefix].plugin
        return None

    def _taken_by(self, item: Entry | Namespace, plugin: str) -> str | None:
        """Who already holds a name of ``item`` (a plugin may add ``prefix:name`` entries to its own namespace)."""
        if isinstance(item, Namespace):
            if item.prefix in self.namespaces:
                return self.namespaces[item.prefix].plugin
            return next(
                (
                    e.plugin
                    for e in self.entries.values()
                    if e.name.startswith(f"{item.prefix}:") and e.plugin != plugin
                ),
                None,
            )
        for key in (item.name, *item.aliases):
            owner = self.owner(key)
            if owner is not None and (owner != plugin or key in self.entries or key in self.aliases):
                return owner
        return None

    def conflicts(self, staged: list[Entry | Namespace], plugin: str) -> list[str]:
        """Why ``staged`` cannot be committed: invalid names, or names taken (here or within ``staged``)."""
        problems: list[str] = []
        seen: set[str] = set()
        for item in staged:
            if isinstance(item, Namespace):
                keys, valid = [f"{item.prefix}:"], isinstance(item.prefix, str) and bool(PREFIX_RE.match(item.prefix))
            else:
                keys = [item.name, *item.aliases]
                valid = all(isinstance(k, str) and NAME_RE.match(k) for k in keys)
            taken = self._taken_by(item, plugin) if valid else None
            if not valid:
                problems.append(
                    f"invalid {self.kind} name {', '.join(map(repr, keys))} (letters, digits and _.+- only, optionally "
                    "prefix:name)"
                )
            elif taken:
                problems.append(f"{self.kind} {keys[0]!r} is already registered by plugin {taken!r}")
            elif seen.intersection(keys):
                problems.append(f"{self.kind} {keys[0]!r} is registered twice by this plugin")
            seen.update(keys)
        return problems

    def commit(self, staged: list[Entry | Namespace]) -> None:
        """Add staged entries and namespaces (after :meth:`conflicts` found none)."""
        for item in staged:
            if isinstance(item, Namespace):
                self.namespaces[item.prefix] = item
                continue
            self.entries[item.name] = item
            for alias in item.aliases:
                self.aliases[alias] = item.name

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

    def plugin_of(self, name: str) -> str:
        """The plugin that provides ``name`` (its entry's or its namespace's)."""
        name = self.canonical(name)
        return self.owner(name) or ""

    def summary(self, name: str) -> str:
        name = self.canonical(name)
        if name in self.entries:
            return self.entries[name].summary
        return self.namespaces[name.partition(":")[0]].summary


class Register:
    """The ``register`` callable handed to a plugin's hook implementation; it stages what is registered."""

    def __init__(self, registry: Registry, plugin: str) -> None:
        self.registry = registry
        self.plugin = plugin
        self.staged: list[Entry | Namespace] = []

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        summary: str = "",
        aliases: tuple[str, ...] | list[str] = (),
    ) -> None:
        if not callable(factory):
            raise TypeError(
                f"{self.registry.kind} {name!r}: the factory must be callable, got {type(factory).__name__}"
            )
        doc = summary or next(iter((factory.__doc__ or "").strip().splitlines()), "")
        self.staged.append(Entry(name, factory, doc, self.plugin, tuple(aliases)))

    def namespace(
        self,
        prefix: str,
        resolver: Callable[[str], Callable[..., Any]],
        lister: Callable[[str], list[str]],
        summary: str = "",
    ) -> None:
        self.staged.append(Namespace(prefix, resolver, lister, summary, self.plugin))


def lazy(path: str) -> Callable[..., Any]:
    """A factory that imports ``"package.module:attr"`` only when first called (keeps registration cheap).

    ``factory.target()`` imports and returns the implementation itself (for option introspection).
    """
    module_name, _, attr = path.partition(":")

    def target() -> Any:
        return getattr(importlib.import_module(module_name), attr)

    def factory(*args: Any, **kwargs: Any) -> Any:
        return target()(*args, **kwargs)

    factory.__qualname__ = factory.__name__ = f"lazy({path})"
    factory.__doc__ = f"Imports and calls {path}."
    factory.__module__ = module_name  # where the implementation lives
    factory.target = target  # type: ignore[attr-defined]
    return factory


def accepted_options(factory: Callable[..., Any], skip: int = 0) -> tuple[str, ...] | None:
    """Keyword options ``factory`` accepts (after ``skip`` leading positional parameters), or None when it
    takes ``**kwargs`` (it then checks its own options) or cannot be inspected."""
    impl = factory.target() if callable(getattr(factory, "target", None)) else factory
    try:
        params = list(inspect.signature(impl).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return tuple(named[skip:])
