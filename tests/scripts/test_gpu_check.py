"""``scripts/gpu_check.sh`` parses, answers ``--help`` and refuses bad arguments without running
anything, and its summary reports a failed step as failed, with no figures filled in."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
SCRIPT = SCRIPTS / "gpu_check.sh"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash not found")


def run_script(*args: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "OUT": str(out)},
    )


@needs_bash
def test_gpu_check_is_valid_bash():
    done = subprocess.run(
        ["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr


@needs_bash
def test_help_prints_the_usage_and_runs_nothing(tmp_path):
    done = run_script("--help", out=tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "gpu_check.sh [--device cuda|cpu] [--quick]" in done.stdout
    assert "WSI_MIL_TEST_DEVICE" in done.stdout and "set -uo" not in done.stdout
    assert not (tmp_path / "out").exists()


@needs_bash
def test_bad_arguments_are_refused_in_one_line(tmp_path):
    done = run_script("--device", "tpu", out=tmp_path / "out")
    assert done.returncode == 2
    assert done.stderr.strip() == "gpu_check.sh: --device must be cuda or cpu, got tpu"
    done = run_script("--fast", out=tmp_path / "out")
    assert done.returncode == 2 and "unknown argument --fast" in done.stderr
    done = run_script("--only", "tests,bench", out=tmp_path / "out")
    assert (
        done.returncode == 2
        and "--only takes tests,features,training,pipeline, got bench" in done.stderr
    )
    assert not (tmp_path / "out").exists()


def test_summary_reports_a_failed_step_without_figures(tmp_path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "gpu_check_summary", SCRIPTS / "gpu_check_summary.py"
    )
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    status = tmp_path / "status.tsv"
    status.write_text("tests\tok\t61.2\nfeatures\ttimed out\t200.4\n")
    (tmp_path / "pytest.xml").write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
        '<testcase classname="t" name="a"/><testcase classname="t" name="b"><failure/>'
        '</testcase><testcase classname="t" name="c"><skipped/></testcase></testsuite>'
        "</testsuites>"
    )
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "gpu_check_summary.py",
            "--out",
            str(tmp_path),
            "--status",
            str(status),
            "--device",
            "cuda",
            "--seconds",
            "300",
        ],
    )
    assert summary.main() == 1
    printed = capsys.readouterr().out
    assert "features timed out (200 s)" in printed
    assert "tests: 1 passed, 1 failed, 0 errors, 1 skipped" in printed and "FAILED t::b" in printed
    assert "features: no figures (timed out)" in printed
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["features"] is None and saved["steps"]["tests"]["seconds"] == 61.2
