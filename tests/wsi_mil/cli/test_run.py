"""``wsi-mil run``: the resume ledger, and a partial pipeline that resumes and redoes."""

from __future__ import annotations

import json
import logging

import pytest

from wsi_mil.config.pipeline import parse_config
from wsi_mil.pipeline.run import Ledger, PipelineError, run_pipeline


def test_ledger_decisions(tmp_path):
    ledger = Ledger(tmp_path / "run_state.json")
    assert ledger.must_redo("tile", {"a": 1}, upstream_changed=True) == (False, "")
    ledger.start("tile", {"a": 1}, redo=False)
    ledger.finish("tile")
    again = Ledger(tmp_path / "run_state.json")  # read back from disk
    assert again.must_redo("tile", {"a": 1}, upstream_changed=False) == (False, "")
    assert again.must_redo("tile", {"a": 2}, upstream_changed=False)[0]
    assert again.must_redo("tile", {"a": 1}, upstream_changed=True)[0]


def test_an_interrupted_redo_stays_a_redo(tmp_path):
    ledger = Ledger(tmp_path / "run_state.json")
    ledger.start("heatmap", {"a": 1}, redo=True)  # killed before finish()
    redo, why = Ledger(tmp_path / "run_state.json").must_redo("heatmap", {"a": 1}, False)
    assert redo and "interrupted" in why


def test_unreadable_ledger_is_a_clear_error(tmp_path):
    (tmp_path / "run_state.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(PipelineError, match="run_state.json: unreadable"):
        Ledger(tmp_path / "run_state.json")


def _config(tmp_path, **tiling):
    return parse_config(
        {
            "out": str(tmp_path / "out"),
            "stages": ["cohort", "tile"],
            "cohort": {
                "train_normal": 1,
                "train_tumor": 1,
                "test_normal": 0,
                "test_tumor": 0,
                "size_px": 1024,
            },
            "tiling": {"target_mpp": 1.0, "tile_size": 64, **tiling},
        }
    )


def test_partial_pipeline_resumes_and_redoes_on_changed_parameters(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="wsi_mil")  # the runner logs each stage's line
    first = run_pipeline(_config(tmp_path))
    assert [r.stage for r in first.stages] == ["cohort", "tile"]
    assert first.stages[1].summary.startswith("tile: 2 done") and first.exit_code == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "tiles").glob("*.h5")) == ["normal_001.h5", "tumor_001.h5"]
    assert (out / "config.yaml").is_file()
    state = json.loads((out / "run_state.json").read_text(encoding="utf-8"))
    assert state["tile"]["complete"] and state["cohort"]["complete"]

    again = run_pipeline(_config(tmp_path))
    assert again.stages[0].summary.endswith("0 generated")
    assert again.stages[1].summary.startswith("tile: 0 done, 2 skipped")
    assert not any(r.new_outputs for r in again.stages)

    changed = run_pipeline(_config(tmp_path, min_tissue=0.5))
    assert changed.stages[1].summary.startswith("tile: 2 done, 0 skipped")
    assert any(
        "[tile] redoing every output: parameters changed" in line for line in caplog.messages
    )


def test_run_command_check_prints_the_resolved_config(tmp_path, capsys):
    from wsi_mil.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(f"out: {tmp_path / 'o'}\ncohort: {{train_normal: 2}}\n", encoding="utf-8")
    assert main(["run", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "train_normal: 2" in out and "target_mpp: 0.5" in out
    assert not (tmp_path / "o").exists()


def test_run_command_without_config_says_where_to_start(capsys):
    from wsi_mil.cli import main

    assert main(["run"]) == 2
    assert "configs/default.yaml" in capsys.readouterr().err
