"""Plugin hook specifications (pluggy, project name ``rsabench``).

Every hook receives a ``register`` callable. Registering must stay cheap: pass factories or import
paths, never build torch models or read data at registration time.
"""

import pluggy

hookspec = pluggy.HookspecMarker("rsabench")
hookimpl = pluggy.HookimplMarker("rsabench")


@hookspec
def register_datasets(register):
    """Register datasets: ``register(name, factory, summary=...)``; ``factory(data_dir) -> Dataset``."""


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
