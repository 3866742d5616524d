"""Built-in datasets (registration only: modules are imported when a dataset is loaded or its data managed)."""

from rsabench.dataset import with_data
from rsabench.hookspecs import hookimpl
from rsabench.registry import lazy


@hookimpl
def register_datasets(register):
    register(
        "kriegeskorte2008",
        with_data(lazy("rsabench.builtin.kriegeskorte2008:load"), "rsabench.builtin.kriegeskorte2008:DATA"),
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
        with_data(lazy("rsabench.builtin.nsd:load"), "rsabench.builtin.nsd:DATA"),
        summary="Natural Scenes Dataset (Algonauts 2023 layout): 7T fMRI ROI RDMs, 8 subjects, COCO images (download)",
    )
    register(
        "algonauts-fmri",
        with_data(lazy("rsabench.builtin.algonauts:load_fmri"), "rsabench.builtin.algonauts_data:FMRI"),
        summary="Algonauts 2019 fMRI: EVC and IT RDMs, 15 subjects; 92+118 train, 78 test, TS2 (import the release)",
    )
    register(
        "algonauts-meg",
        with_data(lazy("rsabench.builtin.algonauts:load_meg"), "rsabench.builtin.algonauts_data:MEG"),
        summary="Algonauts 2019 MEG: early/late decoding RDMs, 15 subjects x 2 sessions (import the release)",
    )
