"""Error types and what the CLI does with them.

- :class:`UsageError` (and :class:`DataError`): the user's mistake; one line on stderr, exit 2, nothing written.
- :class:`CellFailure`: a cell cannot produce an honest number (training diverged, non-finite weights or
  features, a constant model RDM); one line naming the cause, exit 1, no record.
- :class:`SweepFailed`: some cells of a sweep failed (their failure records name the causes); exit 1.
- :class:`PluginError`: a plugin broke its contract (wrong return type, bad name); one line naming the
  plugin, exit 1.
- :class:`Interrupted`: SIGINT or SIGTERM arrived; exit 128 + signal number.
"""

from __future__ import annotations

import signal


class UsageError(Exception):
    """Bad input from the user (unknown name, bad option value, missing or malformed file)."""


class DataError(UsageError):
    """A data file is missing, unreadable or violates an invariant. The message names the file."""


class CellFailure(Exception):
    """A cell ran but its model is broken: it gets this failure, never a number."""


class SweepFailed(Exception):
    """Some cells of a sweep failed (each has its failure record); the others ran. Exit 1."""


class PluginError(Exception):
    """A plugin returned something that breaks the plugin contract. The message names the plugin."""


class Interrupted(BaseException):
    """A termination signal (SIGINT, SIGTERM) arrived; like KeyboardInterrupt, not caught by ``except Exception``."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
