"""Built-in scoring conventions (registration only: implementations are imported when a scorer is built)."""

from rsabench.hookspecs import hookimpl
from rsabench.registry import lazy


@hookimpl
def register_conventions(register):
    register(
        "computed",
        lazy("rsabench.conventions:computed"),
        summary="metric per subject; noise ceilings computed from the data on the scored pairs (rsatoolbox pooling)",
    )
    register(
        "algonauts2019",
        lazy("rsabench.builtin.algonauts_convention:scorer"),
        summary="Algonauts 2019 devkit: mean squared Spearman over subjects, % of the devkit's noise ceilings",
    )
