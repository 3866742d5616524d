"""Built-in executors (registration only)."""

from rsabench.hookspecs import hookimpl
from rsabench.registry import lazy


@hookimpl
def register_executors(register):
    register(
        "local",
        lazy("rsabench.executor:LocalExecutor"),
        summary="this machine: in this process, or --jobs N worker processes",
    )
    register(
        "slurm",
        lazy("rsabench.slurm_executor:SlurmExecutor"),
        summary="a Slurm job array through submitit (pip install 'rsabench[slurm]')",
    )
    register(
        "ray",
        lazy("rsabench.ray_executor:RayExecutor"),
        summary="Ray tasks on a running cluster or a local instance (pip install 'rsabench[ray]')",
    )
