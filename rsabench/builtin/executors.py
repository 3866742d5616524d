"""Built-in executors (registration only)."""

from rsabench.hookspecs import hookimpl
from rsabench.registry import lazy


@hookimpl
def register_executors(register):
    register("local", lazy("rsabench.executor:LocalExecutor"), summary="run cells one after another in this process")
