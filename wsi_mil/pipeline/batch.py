"""Run one per-slide function over many slides: skip what is done, record what fails, carry on.

Every verb that walks a folder of slides goes through :func:`run_batch`, so they all behave
the same way: a slide whose output is complete is skipped, a slide that raises is recorded in
``failures.csv`` (slide, stage, error) and the batch carries on, and the caller exits non-zero
when anything failed. Each job is a picklable callable of one slide to one output, with no
state shared between slides, so a process pool or a Dask cluster can schedule them; which
one runs them is decided in one place, :func:`wsi_mil.executors.run_jobs`.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tiling.storage import csv_text, write_text_atomic
from wsi_mil.config.executor import ExecutorParams
from wsi_mil.console import progress_bar
from wsi_mil.executors import describe_failure, run_jobs

FAILURE_COLUMNS = ("slide", "stage", "error")
#: slides printed per kind of failure; the rest of that kind are counted, not printed (a folder of
#: 1 000 slides without a resolution would otherwise print 1 000 near-identical lines)
FAILURES_SHOWN = 3
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlideJob:
    """One slide's work: ``run()`` writes ``output``; ``slide`` names it in logs and failures.

    ``resources`` are what a worker must offer to run it (``{"GPU": 1}`` for an encoder on
    CUDA); a Dask cluster places the job by them, the local process pool ignores them.
    """

    slide: str
    output: Path
    run: Callable[[], Any]
    resources: Mapping[str, float] | None = None


@dataclass
class BatchResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (slide, error)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self, stage: str) -> str:
        return (
            f"{stage}: {len(self.done)} done, {len(self.skipped)} skipped (complete), "
            f"{len(self.failed)} failed"
        )


def _run_one(job: SlideJob) -> str | None:
    """Run a job; return None on success or the error text (raised errors never escape)."""
    try:
        job.run()
    except Exception as exc:  # noqa: BLE001 - one bad slide must not stop the batch
        return describe_failure(exc)
    return None


def record_failures(path: Path, stage: str, failed: Sequence[tuple[str, str]]) -> None:
    """Rewrite ``failures.csv``: this stage's rows replaced by ``failed``, other stages kept."""
    rows: list[dict[str, str]] = []
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as f:
            rows = [row for row in csv.DictReader(f) if row.get("stage") != stage]
    rows += [{"slide": slide, "stage": stage, "error": error} for slide, error in failed]
    if not rows:
        if path.is_file():
            path.unlink()
        return
    write_text_atomic(path, csv_text(rows, FAILURE_COLUMNS))


def run_batch(
    jobs: Sequence[SlideJob],
    *,
    stage: str,
    failures_csv: str | os.PathLike,
    is_complete: Callable[[Path], bool] = Path.exists,
    workers: int = 1,
    overwrite: bool = False,
    executor: ExecutorParams | None = None,
    unit: str = "slide",
) -> BatchResult:
    """Run ``jobs``, skipping complete outputs unless ``overwrite``; record failures.

    ``unit``: what one job is, for the progress bar (a patient-level run's job is a patient).

    ``executor`` says where the jobs run (default: here, ``workers`` slides at a time; with a
    Dask executor ``workers`` is unused and the cluster's workers run them).
    """
    result = BatchResult()
    todo = []
    for job in jobs:
        if not overwrite and is_complete(job.output):
            result.skipped.append(job.slide)
        else:
            todo.append(job)

    seen: Counter[str] = Counter()  # failures per kind (the error, the slide's name taken out)

    def finish(job: SlideJob, error: str | None) -> None:
        if error is None:
            result.done.append(job.slide)
            return
        result.failed.append((job.slide, error))
        kind = error.replace(job.slide, "<slide>")
        seen[kind] += 1
        if seen[kind] <= FAILURES_SHOWN:
            logger.warning("[%s] %s failed: %s", stage, job.slide, error)
        elif seen[kind] == FAILURES_SHOWN + 1:
            logger.warning(
                "[%s] more slides fail with the same error: counted, not printed "
                "(failures.csv lists every one)",
                stage,
            )

    with progress_bar(total=len(todo), desc=stage, unit=unit, show=bool(todo)) as bar:
        for job, error in run_jobs(todo, _run_one, stage=stage, workers=workers, executor=executor):
            finish(job, error)
            bar.update()
    for kind, count in seen.items():
        if count > FAILURES_SHOWN:
            logger.warning("[%s] %d slides failed with: %s", stage, count, kind)
    record_failures(Path(failures_csv), stage, result.failed)
    return result
