"""Error types. A `UsageError` is the user's mistake: the CLI prints its message on one line and exits 2."""


class UsageError(Exception):
    """Bad input from the user (unknown name, bad option value, missing or malformed file)."""


class DataError(UsageError):
    """A data file is missing, unreadable or violates an invariant. The message names the file."""
