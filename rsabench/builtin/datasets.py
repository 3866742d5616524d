"""Built-in datasets (registration only: modules are imported when a dataset is loaded)."""

from rsabench.hookspecs import hookimpl
from rsabench.registry import lazy


@hookimpl
def register_datasets(register):
    register(
        "kriegeskorte2008",
        lazy("rsabench.builtin.kriegeskorte2008:load"),
        summary="Kriegeskorte et al. 2008: human IT fMRI, 4 subjects x 2 sessions, 92 images (embedded)",
    )
    register(
        "synthetic",
        lazy("rsabench.builtin.synthetic:load"),
        summary=(
            "Synthetic shapes with a known generative model: groups A and B, targets early (low-level) and late "
            "(shape latent); generated, no files"
        ),
    )
    register(
        "nsd",
        lazy("rsabench.builtin.nsd:load"),
        summary="Natural Scenes Dataset (Algonauts 2023 layout): 7T fMRI ROI RDMs, 8 subjects, COCO images (download)",
    )
    register(
        "algonauts-fmri",
        lazy("rsabench.builtin.algonauts:load_fmri"),
        summary="Algonauts 2019 fMRI: EVC and IT RDMs, 15 subjects; 92+118 train, 78 test, TS2 (import the release)",
    )
    register(
        "algonauts-meg",
        lazy("rsabench.builtin.algonauts:load_meg"),
        summary="Algonauts 2019 MEG: early/late decoding RDMs, 15 subjects x 2 sessions (import the release)",
    )
