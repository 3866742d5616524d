"""Built-in objectives (registration only)."""

from rsabench.hookspecs import hookimpl
from rsabench.registry import lazy


@hookimpl
def register_objectives(register):
    register(
        "frozen",
        lazy("rsabench.builtin.basic_objectives:Frozen"),
        summary="no training; layer chosen on validation images",
    )
    register(
        "dissim",
        lazy("rsabench.builtin.basic_objectives:Dissim"),
        summary="Agrawal 2019: regress correlation distance onto neural dissimilarity",
    )
    register(
        "contrastive",
        lazy("rsabench.builtin.similarity_objectives:Contrastive"),
        summary="Hadsell 2006: margin loss on pairs labelled similar/dissimilar by target threshold",
    )
    register(
        "rdm-corr",
        lazy("rsabench.builtin.similarity_objectives:RDMCorrelation"),
        summary="1 - Pearson between the batch's model and target RDM vectors",
    )
    register(
        "cka",
        lazy("rsabench.builtin.similarity_objectives:CKA"),
        summary="log(1 - linear CKA) between model kernel and double-centred target RDM (Kornblith 2019)",
    )
