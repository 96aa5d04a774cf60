"""Where the per-slide jobs run: this machine's process pool, or a Dask cluster.

Kept free of Dask (stdlib only) so ``wsi-mil --help`` and the config checker load it fast; the
executors themselves are in :mod:`wsi_mil.executors`. These are the ``executor:``
section of a YAML config and the ``--executor`` / ``--scheduler`` flags of the per-slide verbs.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from wsi_mil.config.schema import check_fields, constrained

#: Executor kinds: ``local`` (a process pool on this machine) or ``dask`` (a Dask cluster).
ExecutorKind = Literal["local", "dask"]
EXECUTOR_KINDS: tuple[str, ...] = typing.get_args(ExecutorKind)


@dataclass(frozen=True)
class ClusterParams:
    """A Dask cluster that wsi-mil starts for the run and stops after it (``executor.cluster``).

    ``kind: local`` is a ``distributed.LocalCluster`` on this machine; ``kind: slurm`` submits
    ``jobs`` SLURM jobs through ``dask_jobqueue.SLURMCluster``, each running Dask workers.
    """

    #: local (Dask LocalCluster on this machine) or slurm (dask-jobqueue SLURMCluster jobs).
    kind: Literal["local", "slurm"] = "local"
    #: local: worker processes (null: one per CPU).
    n_workers: int | None = constrained(None, ge=1)
    #: local: threads of each worker process (one slide at a time per thread).
    threads_per_worker: int = constrained(1, ge=1)
    #: slurm: partition the jobs are submitted to (null: the cluster's default).
    queue: str | None = None
    #: slurm: account the jobs are charged to (null: your default).
    account: str | None = None
    #: slurm: CPU cores of one job.
    cores: int = constrained(8, ge=1)
    #: slurm: Dask worker processes per job (the job's cores and memory are shared among them).
    processes: int = constrained(1, ge=1)
    #: slurm: memory of one job (SLURM's --mem, e.g. 32GB).
    memory: str = "32GB"
    #: slurm: wall-time limit of one job (HH:MM:SS); workers stop there and their slides move on.
    walltime: str = "04:00:00"
    #: slurm: jobs submitted (each one node or part of one).
    jobs: int = constrained(1, ge=1)
    #: slurm: GPUs of one job (--gres=gpu:N); each worker process then offers a GPU resource.
    gpus: int = constrained(0, ge=0)
    #: slurm: network interface the workers and scheduler talk over (e.g. ib0); null: default.
    interface: str | None = None
    #: slurm: extra #SBATCH lines' options, e.g. [--constraint=a100, --qos=long].
    job_extra_directives: tuple[str, ...] = ()
    #: slurm: shell lines run before the worker starts, e.g. [module load cuda,
    #: source venv/bin/activate].
    job_script_prologue: tuple[str, ...] = ()
    #: slurm: folder of the jobs' output and error logs (null: the working folder).
    log_directory: str | None = None
    #: slurm: worker scratch folder on the node, e.g. $TMPDIR (null: Dask's default).
    local_directory: str | None = None
    #: host:port the scheduler's dashboard listens on. Loopback by default, as every server of
    #: wsi-mil (Dask's own default, :8787, is every interface): open it from another machine
    #: through an SSH tunnel (ssh -L 8787:localhost:8787 HOST), or give :8787 to expose it.
    dashboard_address: str = "127.0.0.1:8787"

    def __post_init__(self) -> None:
        check_fields(self)  # every Literal and range above
        if self.processes > self.cores:
            raise ValueError(
                f"cluster processes ({self.processes}) cannot exceed cores "
                f"({self.cores}): each worker process needs a core"
            )


@dataclass(frozen=True)
class ExecutorParams:
    """How the per-slide stages run (YAML section ``executor``).

    ``kind: local`` runs slides in a process pool on this machine (``workers`` at a time).
    ``kind: dask`` sends them to a Dask cluster: the scheduler at ``address`` when given, else
    the ``cluster`` wsi-mil starts (a LocalCluster when neither is given).
    """

    #: local (process pool on this machine) or dask (a Dask cluster).
    kind: ExecutorKind = "local"
    #: dask: address of a running scheduler, e.g. tcp://HOST:8786 (null: start ``cluster``).
    address: str | None = None
    #: dask: the cluster to start when there is no ``address`` (null: a LocalCluster).
    cluster: ClusterParams | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if self.kind == "local" and (self.address is not None or self.cluster is not None):
            raise ValueError("executor address and cluster need kind: dask (kind is local)")
        if self.address is not None and self.cluster is not None:
            raise ValueError(
                "executor: give either address (a running scheduler) or cluster "
                "(one to start), not both"
            )
        if self.address is not None and "://" not in self.address:
            raise ValueError(
                f"executor address {self.address!r} must be a scheduler address "
                f"such as tcp://HOST:8786"
            )

    @property
    def distributed(self) -> bool:
        """Whether jobs go to Dask (the stages' own process pools are then not used)."""
        return self.kind == "dask"
