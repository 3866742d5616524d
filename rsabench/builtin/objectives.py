"""Built-in objectives (registration only)."""

from rsabench.hookspecs import hookimpl
from rsabench.registry import lazy


@hookimpl
def register_objectives(register):
    register("frozen", lazy("rsabench.builtin.basic_objectives:Frozen"), summary="no training; layer chosen on validation images")
    register("dissim", lazy("rsabench.builtin.basic_objectives:Dissim"), summary="Agrawal 2019: regress correlation distance onto neural dissimilarity")
