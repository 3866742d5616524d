"""Executors decide where cells run. ``local`` runs them in this process, one after another."""

from __future__ import annotations

from typing import Any, Callable

from .runner import PlannedCell, Session


class Executor:
    """Base class: run planned cells, calling ``done(cell, record)`` as each finishes."""

    name = ""

    def run(
        self, session: Session, cells: list[PlannedCell], done: Callable[[PlannedCell, dict[str, Any]], None]
    ) -> None:
        raise NotImplementedError


class LocalExecutor(Executor):
    """Sequential, in-process execution (the default)."""

    name = "local"

    def __init__(self, **options: Any) -> None:
        self.options = options

    def run(
        self, session: Session, cells: list[PlannedCell], done: Callable[[PlannedCell, dict[str, Any]], None]
    ) -> None:
        for cell in cells:
            done(cell, session.run(cell))
