"""``--dataset-option`` / ``--objective-option`` routing: every key goes somewhere, or it is a usage error.

``NAME.key=value`` applies to the plugin ``NAME`` of this run; a plain ``key=value`` to every plugin of the
run that accepts ``key``. A key no plugin of the run accepts, a ``NAME.`` that is not in the run, or a key
given twice is a :class:`~rsabench.errors.UsageError`, never silently dropped.
"""

from __future__ import annotations

import difflib
from typing import Sequence

from .errors import UsageError


def route_options(
    option: str,
    kind: str,
    pairs: Sequence[tuple[str, str]],
    accepted: dict[str, tuple[str, ...] | None],
) -> dict[str, dict[str, str]]:
    """``{plugin name: {key: value}}`` for the plugins of a run.

    ``accepted[name]`` lists the options plugin ``name`` takes, or None when it checks its own
    (``**kwargs``): such a plugin receives every plain key.
    """
    routed: dict[str, dict[str, str]] = {name: {} for name in accepted}
    scoped: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for key, value in pairs:
        if key in seen:
            raise UsageError(f"{option} {key}: given twice")
        seen.add(key)
        scope = next((n for n in sorted(accepted, key=len, reverse=True) if key.startswith(f"{n}.")), None)
        if scope is None and "." in key:
            name = key.partition(".")[0]
            raise UsageError(f"{option} {key}: no {kind} {name!r} in this run (it runs {', '.join(accepted)})")
        if scope is not None:
            sub = key[len(scope) + 1 :]
            _check(option, kind, scope, key, sub, accepted[scope])
            scoped.append((scope, sub, value))
            continue
        takers = [n for n, keys in accepted.items() if keys is None or key in keys]
        if not takers:
            known = sorted({k for keys in accepted.values() for k in keys or ()})
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            listing = "; ".join(f"{n}: {', '.join(keys) or 'none'}" for n, keys in accepted.items() if keys is not None)
            raise UsageError(f"{option} {key}: no {kind} of this run takes option {key!r}{hint} (options: {listing})")
        for name in takers:
            routed[name][key] = value
    for scope, sub, value in scoped:  # NAME.key overrides a plain key for that plugin
        routed[scope][sub] = value
    return routed


def _check(option: str, kind: str, name: str, key: str, sub: str, keys: tuple[str, ...] | None) -> None:
    if keys is None or sub in keys:
        return
    close = difflib.get_close_matches(sub, keys, n=1)
    hint = f"; did you mean {name}.{close[0]}?" if close else ""
    known = ", ".join(keys) if keys else "none"
    raise UsageError(f"{option} {key}: {kind} {name!r} has no option {sub!r}{hint} (options: {known})")
