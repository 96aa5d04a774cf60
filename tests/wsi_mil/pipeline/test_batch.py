import csv
import functools
from pathlib import Path

from wsi_mil.pipeline.batch import SlideJob, record_failures, run_batch


def _write(path: Path, fail: bool = False) -> None:
    if fail:
        raise ValueError(f"{path.name}: cannot read this slide")
    path.write_text("done")


def _jobs(tmp_path, names, failing=()):
    return [
        SlideJob(
            n, tmp_path / f"{n}.out", functools.partial(_write, tmp_path / f"{n}.out", n in failing)
        )
        for n in names
    ]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_batch_carries_on_past_a_failure_and_records_it(tmp_path):
    failures = tmp_path / "failures.csv"
    result = run_batch(
        _jobs(tmp_path, ["a", "b", "c"], failing={"b"}), stage="tile", failures_csv=failures
    )
    assert result.done == ["a", "c"]
    assert [slide for slide, _ in result.failed] == ["b"]
    assert result.exit_code == 1
    rows = _rows(failures)
    assert rows == [
        {"slide": "b", "stage": "tile", "error": "ValueError: b.out: cannot read this slide"}
    ]


def test_batch_skips_complete_outputs_and_clears_fixed_failures(tmp_path):
    failures = tmp_path / "failures.csv"
    run_batch(_jobs(tmp_path, ["a", "b"], failing={"b"}), stage="tile", failures_csv=failures)
    result = run_batch(_jobs(tmp_path, ["a", "b"]), stage="tile", failures_csv=failures)
    assert result.skipped == ["a"]
    assert result.done == ["b"]
    assert result.exit_code == 0
    assert not failures.exists()


def test_batch_overwrite_redoes_everything(tmp_path):
    failures = tmp_path / "failures.csv"
    run_batch(_jobs(tmp_path, ["a"]), stage="tile", failures_csv=failures)
    result = run_batch(_jobs(tmp_path, ["a"]), stage="tile", failures_csv=failures, overwrite=True)
    assert result.done == ["a"] and result.skipped == []


def test_batch_with_worker_processes(tmp_path):
    failures = tmp_path / "failures.csv"
    result = run_batch(
        _jobs(tmp_path, ["a", "b", "c"], failing={"c"}),
        stage="tile",
        failures_csv=failures,
        workers=2,
    )
    assert sorted(result.done) == ["a", "b"]
    assert [slide for slide, _ in result.failed] == ["c"]


def test_failures_of_other_stages_are_kept(tmp_path):
    failures = tmp_path / "failures.csv"
    record_failures(failures, "tile", [("s1", "bad tile")])
    record_failures(failures, "extract", [("s2", "bad bag")])
    record_failures(failures, "tile", [])
    assert _rows(failures) == [{"slide": "s2", "stage": "extract", "error": "bad bag"}]


def test_many_slides_failing_alike_print_a_few_lines_and_a_count(tmp_path, caplog):
    """Three slides of a kind of failure are printed, the rest counted in one line; every one
    is in failures.csv. A failure of another kind is printed as usual."""
    names = [f"s{i}" for i in range(7)]
    jobs = _jobs(tmp_path, names, failing=set(names[:6]))
    jobs.append(SlideJob("odd", tmp_path / "odd.out", functools.partial(_fail_differently)))
    with caplog.at_level("WARNING", logger="wsi_mil"):
        result = run_batch(jobs, stage="tile", failures_csv=tmp_path / "failures.csv")
    assert len(result.failed) == len(_rows(tmp_path / "failures.csv")) == 7
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if " failed: " in line] == [
        "[tile] s0 failed: ValueError: s0.out: cannot read this slide",
        "[tile] s1 failed: ValueError: s1.out: cannot read this slide",
        "[tile] s2 failed: ValueError: s2.out: cannot read this slide",
        "[tile] odd failed: OSError: disk full",
    ]
    assert (
        lines.count(
            "[tile] more slides fail with the same error: counted, not printed "
            "(failures.csv lists every one)"
        )
        == 1
    )
    assert (
        lines[-1] == "[tile] 6 slides failed with: ValueError: <slide>.out: cannot read this slide"
    )


def _fail_differently() -> None:
    raise OSError("disk full")
