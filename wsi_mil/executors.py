"""The one place that decides how jobs run: a local process pool or a Dask cluster.

:func:`run_jobs` takes the jobs of a batch and yields ``(job, error)`` as each one finishes,
wherever it ran; :func:`wsi_mil.pipeline.batch.run_batch` turns that into skipped / done /
failed, ``failures.csv`` and the progress bar, the same for every executor. The stages only
pass an :class:`~wsi_mil.config.executor.ExecutorParams` through.

Why Dask distributed rather than our own scheduling: it already re-runs the task of a worker
that died (SIGKILL, lost node) on another worker, up to ``distributed.scheduler.allowed-failures``
times, places tasks by worker resources (``GPU``), and ``dask-jobqueue`` submits its workers as
SLURM/PBS/LSF jobs. Each job writes its outputs atomically (:mod:`tiling.storage`), so a slide
re-run after its worker died finds at most a ``.tmp`` that it deletes and redoes, and a slide
whose worker died after the output was moved into place is written again with the same content.
Not covered: a worker the scheduler presumes dead (no heartbeat, a network partition) that in
fact still runs its slide writes the same ``NAME.tmp`` as the re-run, and the two can collide.

Training's folds run here too (:func:`map_ordered`, through
:func:`wsi_mil.mil.train.map_folds`): a fold is a closure over the run's bags and settings,
which Dask's cloudpickle carries to a worker process and a process pool could not.

Dask is imported only when a Dask executor is used. One Dask client (and the cluster wsi-mil
started for it) can be kept open across several batches with :func:`executor_session`, as
``wsi-mil run`` does, so workers keep their loaded encoders from one stage to the next.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from wsi_mil import console
from wsi_mil.config.executor import ClusterParams, ExecutorParams
from wsi_mil.errors import WsiMilError
from wsi_mil.extras import require_extra

if TYPE_CHECKING:
    from distributed import Client

#: The environment variable that lets a Dask worker start child processes (tile readers).
#: Dask's nanny starts workers as daemonic processes by default, and a daemonic process may
#: not have children, so extraction would read tiles in the worker itself.
NON_DAEMON_ENV = {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}

logger = logging.getLogger(__name__)


class ExecutorError(WsiMilError, ValueError):
    """A Dask executor that cannot be reached, started or used as configured."""


class Job(Protocol):
    """What the executors need of a job (:class:`wsi_mil.pipeline.batch.SlideJob`)."""

    @property
    def slide(self) -> str: ...

    @property
    def resources(self) -> Mapping[str, float] | None: ...


#: a job type; the executors hand each job back as they got it
J = TypeVar("J", bound=Job)
RunOne = Callable[[Any], "str | None"]
#: an item of :func:`map_ordered` and its result
T = TypeVar("T")
R = TypeVar("R")


def run_jobs(
    jobs: Sequence[J],
    run_one: RunOne,
    *,
    stage: str,
    workers: int = 1,
    executor: ExecutorParams | None = None,
) -> Iterator[tuple[J, str | None]]:
    """Run ``run_one(job)`` for every job and yield ``(job, its result)`` as each finishes.

    ``run_one`` must be a module-level function returning None or an error text (it catches
    the job's exceptions itself, so worker and local failures read the same). Locally,
    ``workers`` slides run at a time (1: in this process, in order); on Dask the cluster
    decides. Leaving the iteration early (Ctrl-C) cancels the jobs not yet run.
    """
    if executor is not None and executor.distributed:
        yield from _dask_jobs(jobs, run_one, stage, executor)
    elif workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield job, run_one(job)
    else:
        yield from _pool_jobs(jobs, run_one, workers)


def map_ordered(
    fn: Callable[[T], R], items: Sequence[T], *, stage: str, executor: ExecutorParams | None = None
) -> list[R]:
    """``[fn(item) for item in items]``, here in order, or as tasks of the executor's Dask
    cluster (``fn`` may be a closure: cloudpickle carries it); the first exception is raised
    here, as if the call had run here, and the tasks not yet run are cancelled."""
    if executor is None or not executor.distributed or len(items) <= 1:
        return [fn(item) for item in items]
    with _client(executor) as client:
        run_id = uuid.uuid4().hex[:8]
        futures = client.map(
            fn,
            list(items),
            pure=False,
            key=[f"{stage}-{index}-{run_id}" for index in range(len(items))],
        )
        try:
            return client.gather(futures)
        except BaseException:
            client.cancel(futures, force=True)
            raise


def _pool_jobs(jobs: Sequence[J], run_one: RunOne, workers: int) -> Iterator[tuple[J, str | None]]:
    # spawn, not fork: a forked child of a process that ran OpenCV/OpenMP threads can deadlock.
    # the workers show their messages as this process does (wsi_mil.console)
    initializer = console.install if console.installed() else None
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=initializer
    ) as pool:
        futures = {pool.submit(run_one, job): job for job in jobs}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


# --------------------------------------------------------------------------- Dask


@dataclass
class _Session:
    client: Client
    cluster: Any = None  # the cluster wsi-mil started, closed with the session

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


_sessions: dict[ExecutorParams, _Session] = {}


@contextlib.contextmanager
def executor_session(executor: ExecutorParams | None) -> Iterator[None]:
    """Keep the Dask client (and the cluster it needs) open for every batch run inside.

    Without it each batch connects (or starts its cluster) and closes on its own. A local
    executor needs nothing and this does nothing.
    """
    if executor is None or not executor.distributed or executor in _sessions:
        yield
        return
    _sessions[executor] = _open_session(executor)
    try:
        yield
    finally:
        _sessions.pop(executor).close()


@contextlib.contextmanager
def _client(executor: ExecutorParams) -> Iterator[Client]:
    session = _sessions.get(executor)
    if session is not None:
        yield session.client
        return
    session = _open_session(executor)
    try:
        yield session.client
    finally:
        session.close()


def _open_session(executor: ExecutorParams) -> _Session:
    require_extra("cluster", "a Dask executor")
    import dask
    from distributed import Client

    # Workers this process starts (LocalCluster) may start tile-reader processes.
    dask.config.set({"distributed.worker.daemon": False})
    if executor.address is not None:
        try:
            client = Client(executor.address, timeout="10s")
        except OSError as exc:
            raise ExecutorError(
                f"no Dask scheduler answered at {executor.address} ({exc}); "
                f"start one with `dask scheduler` and workers with "
                f"`dask worker {executor.address}`"
            ) from exc
        session = _Session(client)
    else:
        cluster = start_cluster(executor.cluster or ClusterParams())
        session = _Session(Client(cluster), cluster)
    if console.installed():
        _show_worker_messages(session.client)
    started = (executor.cluster or ClusterParams()) if executor.address is None else None
    link = dashboard_link(session.client, started.dashboard_address if started else None)
    if link:
        logger.info("Dask dashboard: %s", link)
    return session


def _show_worker_messages(client: Client) -> None:
    """The workers, those that join later too, show the library's messages as this process
    does (:mod:`wsi_mil.console`): a worker's lines go where its output goes (this terminal
    for a LocalCluster, the job's log on SLURM)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class ConsolePlugin(WorkerPlugin):
        name = "wsi-mil-console"

        def setup(self, worker: Any) -> None:
            console.install()

    client.register_plugin(ConsolePlugin())


def dashboard_link(client: Client, listen: str | None = None) -> str | None:
    """The scheduler's dashboard URL, or None when it runs none (bokeh missing, disabled).

    ``listen``: the address a cluster wsi-mil started was told to serve it on. A loopback one is
    named with the way in from another machine: Dask's own link names the scheduler's host, on
    which a loopback dashboard does not answer.
    """
    services = client.scheduler_info().get("services", {})
    if "dashboard" not in services:
        return None
    host = (listen or "").rpartition(":")[0]
    if host in ("127.0.0.1", "localhost"):
        port = services["dashboard"]
        return (
            f"http://{host}:{port}/status (this machine only; from another: "
            f"ssh -L {port}:localhost:{port} {socket.gethostname()})"
        )
    return client.dashboard_link


def start_cluster(cluster: ClusterParams) -> Any:
    """Start the cluster of ``cluster`` (its workers may still be queued, for SLURM)."""
    require_extra("cluster", "a Dask cluster")
    if cluster.kind == "local":
        from distributed import LocalCluster

        from features.params import available_cpus

        n_workers = cluster.n_workers or max(1, available_cpus() // cluster.threads_per_worker)
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=cluster.threads_per_worker,
            processes=True,
            resources=_local_resources(),
            silence_logs=logging.ERROR,
            dashboard_address=cluster.dashboard_address,
        )
    slurm = slurm_cluster(cluster)
    slurm.scale(jobs=cluster.jobs)
    return slurm


def _local_resources() -> dict[str, float]:
    """A LocalCluster worker offers a GPU when this machine has one (they share GPU 0)."""
    import torch

    return {"GPU": 1} if torch.cuda.is_available() else {}


def slurm_cluster(cluster: ClusterParams) -> Any:
    """A ``dask_jobqueue.SLURMCluster`` for ``cluster`` (no job is submitted until scaled).

    Its workers allow child processes (tile readers; :data:`NON_DAEMON_ENV`) and, with
    ``gpus``, ask SLURM for ``--gres=gpu:N`` and offer a ``GPU`` resource each.
    """
    import dask
    from dask_jobqueue import SLURMCluster

    prologue = [f"export {name}={value}" for name, value in NON_DAEMON_ENV.items()]
    prologue += list(cluster.job_script_prologue)
    directives = list(cluster.job_extra_directives)
    worker_args: list[str] = []
    if cluster.gpus:
        directives.append(f"--gres=gpu:{cluster.gpus}")
        per_worker = max(1, cluster.gpus // cluster.processes)
        worker_args += ["--resources", f"GPU={per_worker}"]
    kwargs: dict[str, Any] = {
        "queue": cluster.queue,
        "account": cluster.account,
        "cores": cluster.cores,
        "processes": cluster.processes,
        "memory": cluster.memory,
        "walltime": cluster.walltime,
        "job_extra_directives": directives,
        "job_script_prologue": prologue,
        "worker_extra_args": worker_args,
        "log_directory": cluster.log_directory,
        "local_directory": cluster.local_directory,
        "interface": cluster.interface,
        # the user's jobqueue config's scheduler options, but the dashboard's address
        "scheduler_options": {
            **dask.config.get("jobqueue.slurm.scheduler-options", {}),
            "dashboard_address": cluster.dashboard_address,
        },
    }
    return SLURMCluster(**{k: v for k, v in kwargs.items() if v is not None})


def _check_resources(client: Client, jobs: Sequence[J], where: str) -> None:
    """Refuse jobs that need a resource none of the connected workers offers.

    Dask would keep such tasks waiting forever. With no worker connected yet (SLURM jobs still
    queued) nothing can be known, and the jobs wait for workers.
    """
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    if not workers:
        logger.info("waiting for Dask workers to join %s", where)
        return
    offered: set[str] = set()
    for info in workers.values():
        offered |= {name for name, amount in (info.get("resources") or {}).items() if amount}
    needed = {name for job in jobs for name in (job.resources or {})}
    missing = sorted(needed - offered)
    if missing:
        flags = " ".join(f"--resources {name}=1" for name in missing)
        raise ExecutorError(
            f"these jobs need a worker offering {', '.join(missing)}, but none of the "
            f"{len(workers)} worker(s) at {where} does: start GPU workers with "
            f"`dask worker {where} {flags}` (or use device: cpu)"
        )


def describe_failure(exc: BaseException) -> str:
    """A failed slide's one line in ``failures.csv``: the error's class and message."""
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


def _dask_jobs(
    jobs: Sequence[J], run_one: RunOne, stage: str, executor: ExecutorParams
) -> Iterator[tuple[J, str | None]]:
    require_extra("cluster", "a Dask executor")
    from distributed import as_completed as dask_as_completed

    if not jobs:
        return
    with _client(executor) as client:
        where = executor.address or str(client.scheduler_info().get("address", "a local cluster"))
        _check_resources(client, jobs, where)
        run_id = uuid.uuid4().hex[:8]
        futures = {}
        for index, job in enumerate(jobs):
            # A readable, unique key: the dashboard shows the stage and the slide.
            key = f"{stage}-{Path(job.slide).name}-{run_id}-{index}"
            future = client.submit(
                run_one,
                job,
                key=key,
                pure=False,
                resources=dict(job.resources) if job.resources else None,
            )
            futures[future] = job
        try:
            for future in dask_as_completed(futures):
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - KilledWorker, unpicklable jobs, ...
                    result = describe_failure(exc)
                yield futures[future], result
        except BaseException:  # Ctrl-C or the consumer stopped: run nothing more
            client.cancel(list(futures), force=True)
            raise
