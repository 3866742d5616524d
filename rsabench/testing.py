"""The plugin contract: checks every registered plugin must pass (used by tests/test_contract.py).

Third-party plugin authors can run ``pytest --pyargs rsabench`` equivalents by calling these on their plugin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError


def check_dataset(factory: Any, data_dir: Path | None, name: str | None = None) -> None:
    """Loads a Dataset (named ``name``), validates, has targets on groups with image ids; images (when
    present) are uint8 (n, H, W, 3); every listed input file exists; options are declared parameters."""
    from .dataset import Dataset
    from .registry import accepted_options

    ds = factory(data_dir)
    assert isinstance(ds, Dataset), f"the factory returned {type(ds).__name__}, not a Dataset"
    assert name is None or ds.name == name, f"the dataset registered as {name!r} is named {ds.name!r}"
    ds.validate()
    for label, paths in ds.files.items():
        assert paths and all(Path(p).is_file() for p in paths), f"{ds.name}: input files of {label!r} missing"
    options = accepted_options(factory, skip=1)
    assert options is None or all(isinstance(o, str) for o in options)
    assert ds.targets and ds.train_groups
    for group in ds.train_groups:
        g = ds.groups[group]
        assert len(g.ids) == g.n and len(set(g.ids)) == g.n, f"{ds.name}: duplicate image ids in {group}"
        if g.load_images is not None:
            images = g.load_images()
            assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[0] == g.n and images.shape[-1] == 3
    assert ds.citation and ds.license, f"{ds.name}: citation and license are required"


def check_backbone(factory: Any, image_size: int = 64) -> None:
    """Builds with random weights; every default layer produces a finite output; seeded init is reproducible."""
    import torch

    from .backbone import LayerTaps

    backbone = factory()
    a = backbone.build(weights="random", seed=0)
    b = backbone.build(weights="random", seed=0)
    assert a.default_layers, "a backbone must declare default layers"
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_a = LayerTaps(a.model.eval(), a.default_layers)(x)
        out_b = LayerTaps(b.model.eval(), b.default_layers)(x)
    for layer in a.default_layers:
        assert torch.isfinite(out_a[layer]).all(), f"layer {layer} is not finite"
        assert torch.equal(out_a[layer], out_b[layer]), f"random init with the same seed differs at {layer}"
    assert len(a.mean) == 3 and len(a.std) == 3


def check_objective(factory: Any) -> None:
    """A training objective returns a finite scalar whose gradient reaches the features."""
    import torch

    objective = factory()
    if not objective.trains:
        return
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(6, 4, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    d = torch.rand(6, 6, generator=gen, dtype=torch.float64)
    target = (d + d.T) / 2 * (1 - torch.eye(6, dtype=torch.float64))
    i, j = np.triu_indices(6, 1)
    objective.setup(target.numpy()[i, j])
    loss = objective.loss(features, target)
    assert loss.ndim == 0 and torch.isfinite(loss), "loss must be a finite scalar"
    loss.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0


def check_metric(factory: Any) -> None:
    """``compare`` agrees with the metric's own slow ``reference`` on random and tied data."""
    metric = factory()
    rng = np.random.default_rng(0)
    subjects = rng.random((3, 45))
    subjects[1] = np.round(subjects[1], 1)  # ties
    model = rng.random(45)
    got = metric.compare(model[None], metric.prepare(subjects))[0]
    want = [metric.reference(model, s) for s in subjects]
    np.testing.assert_allclose(got, want, atol=1e-10)


def check_executor(factory: Any, log_dir: Path) -> None:
    """An executor is built from ``jobs``, ``log_dir``, ``detach`` and its declared ``OPTIONS`` (each with help and
    a default), refuses an option it does not declare with a usage error, and runs an empty job list without
    reporting anything. (Running real cells is each executor's own test: ``tests/test_executors.py``.)"""
    executor = factory(jobs=1, log_dir=log_dir, detach=False)
    options = getattr(executor, "OPTIONS", None)
    assert isinstance(options, dict), "an executor declares OPTIONS: name -> ExecutorOption"
    for key, option in options.items():
        assert option.help.strip(), f"option {key!r} has no help"
        assert executor.options[key] == option.default
    try:
        factory(jobs=1, log_dir=log_dir, no_such_option="1")
    except UsageError as exc:
        assert "no_such_option" in str(exc)
    else:
        raise AssertionError("an unknown executor option was accepted")
    seen: list[Any] = []
    executor.run([], lambda job, outcome: seen.append(job) or True)
    assert not seen


def skip_reason(exc: Exception) -> str | None:
    """Missing external data is a reason to skip a dataset's contract check, not a failure."""
    return str(exc) if isinstance(exc, UsageError) else None
