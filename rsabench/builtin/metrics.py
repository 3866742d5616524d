"""Built-in RDM comparison metrics (implementations in :mod:`rsabench.rsa`)."""

from rsabench.hookspecs import hookimpl
from rsabench.registry import lazy


@hookimpl
def register_metrics(register):
    register(
        "spearman",
        lazy("rsabench.rsa:SpearmanMetric"),
        summary="Spearman rank correlation, average ranks for ties (official)",
    )
    register("pearson", lazy("rsabench.rsa:PearsonMetric"), summary="Pearson correlation of RDM vectors")
    register("cosine", lazy("rsabench.rsa:CosineMetric"), summary="Cosine similarity of RDM vectors")
    register("kendall-tau-a", lazy("rsabench.rsa:KendallTauAMetric"), summary="Kendall tau-a (Nili et al. 2014)")
