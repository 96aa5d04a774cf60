"""``--executor`` and ``--scheduler``: where a per-slide verb runs its slides.

They are the ``kind`` and ``address`` of the ``executor`` config section
(:class:`~wsi_mil.config.executor.ExecutorParams`), under the names a cluster user
expects (Dask calls the address the scheduler's); their help text is those fields' comments.
A cluster to start (``executor.cluster``: LocalCluster sizes, SLURM jobs) is only set in a
config file: a command line of twenty SLURM flags is a config file.
"""

from __future__ import annotations

import argparse

from wsi_mil.cli.options import OptionError
from wsi_mil.config.executor import EXECUTOR_KINDS, ClusterParams, ExecutorParams
from wsi_mil.config.schema import field_comments


def add_executor_options(
    parser: argparse.ArgumentParser, *, workers_flag: str | None = "--workers"
) -> None:
    """Add the two flags; ``workers_flag`` names the flag whose value sizes a LocalCluster."""
    docs = field_comments(ExecutorParams)
    group = parser.add_argument_group(
        "executor", "where the slides run: this machine, or a Dask cluster (see docs/cluster.md)"
    )
    group.add_argument(
        "--executor",
        choices=EXECUTOR_KINDS,
        default="local",
        help=f"{docs['kind']} (default: local)",
    )
    local = (
        f"; without it, a Dask LocalCluster of {workers_flag} processes is started here"
        if workers_flag
        else "; without it, a Dask LocalCluster is started here"
    )
    group.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help=docs["address"].split(" (null:")[0] + local,
    )


def executor_from_args(args: argparse.Namespace, workers: int | None = None) -> ExecutorParams:
    """The executor the flags ask for; ``workers`` (slides at a time) sizes a LocalCluster."""
    if args.scheduler is not None and args.executor != "dask":
        raise OptionError("--scheduler needs --executor dask")
    if args.executor != "dask":
        return ExecutorParams()
    try:
        if args.scheduler is not None:
            return ExecutorParams(kind="dask", address=args.scheduler)
    except ValueError as exc:
        raise OptionError(f"--scheduler: {exc}") from exc
    n_workers = workers if workers is not None and workers > 1 else None
    return ExecutorParams(kind="dask", cluster=ClusterParams(n_workers=n_workers))
