"""Plugin hook specifications (pluggy, project name ``rsabench``).

Every hook receives a ``register`` callable. Registering must stay cheap: pass factories or import
paths, never build torch models or read data at registration time.
"""

import pluggy

hookspec = pluggy.HookspecMarker("rsabench")
hookimpl = pluggy.HookimplMarker("rsabench")


@hookspec
def register_datasets(register):
    """Register datasets: ``register(name, factory, summary=...)``; ``factory(data_dir, **options) -> Dataset``.

    Data management (``rsabench data info|verify|import|fetch NAME``) is part of the interface: register the
    factory with its :class:`rsabench.dataset.DataSource`, ``register(name, with_data(factory, source))``
    (``from rsabench.dataset import with_data``), where ``source`` is a DataSource or ``"package.module:ATTR"``
    naming one (imported only when a data command runs). A DataSource implements ``describe(data_dir) -> dict``
    (what ``data info`` prints: ``looks_in``, the files expected, ``present``), ``verify(data_dir, *,
    checksums=True) -> list[str]`` (one problem per line, naming the file) and optionally
    ``import_release(src, data_dir, *, checksums=True) -> dict`` and ``fetch(data_dir) -> Path``. A dataset
    registered without one is loaded with default options for ``data info`` and validated for ``data verify``.
    """


@hookspec
def register_backbones(register):
    """Register backbones: ``register(name, factory, summary=...)``; ``factory(**options) -> Backbone``.

    ``register.namespace(prefix, resolver, lister, summary=...)`` registers a family such as
    ``timm:<model>``: ``resolver(rest) -> factory``; ``lister(pattern) -> list[str]``.
    """


@hookspec
def register_objectives(register):
    """Register objectives: ``register(name, factory, summary=...)``; ``factory(**options) -> Objective``."""


@hookspec
def register_metrics(register):
    """Register RDM comparison metrics: ``register(name, factory, summary=...)``; ``factory() -> Metric``."""


@hookspec
def register_executors(register):
    """Register executors: ``register(name, factory, summary=...)``; ``factory(**options) -> Executor``."""


@hookspec
def register_conventions(register):
    """Register scoring conventions: ``register(name, factory, summary=...)``; ``factory(*, dataset, target,
    group, rdms, metric, index, bootstrap_seed, bootstrap_samples) -> rsabench.scoring.TargetScorer``."""
