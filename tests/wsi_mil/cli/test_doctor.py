"""``wsi-mil doctor``: the OpenSlide read check catches corrupted reads; the table and exit code."""

from __future__ import annotations

import numpy as np

from wsi_mil.pipeline import doctor
from wsi_mil.pipeline.doctor import Check


def test_read_check_passes_on_this_openslide(tmp_path):
    check = doctor.read_check(tmp_path)
    assert check.status == "ok", check.detail


def test_read_check_catches_pixman_style_blank_boxes(tmp_path):
    """pixman 0.38 leaves dark boxes in sub-pixel reads above level 0: simulate exactly that."""

    def corrupted(slide, location, level, size):
        pixels = np.asarray(slide.read_region(location, level, size).convert("RGB")).copy()
        if level > 0:
            pixels[: size[1] // 3, : size[0] // 3] = 0
        return pixels

    check = doctor.read_check(tmp_path, read_region=corrupted)
    assert check.status == "fail"
    assert "pixman 0.38" in check.detail and "level 1" in check.detail
    assert "level 0" not in check.detail


def test_read_check_catches_shifted_reads(tmp_path):
    """A reader that ignores the sub-pixel offset (off by one level-0 tile row) is caught too."""

    def shifted(slide, location, level, size):
        x, y = location
        return np.asarray(slide.read_region((x, y + 64), level, size).convert("RGB"))

    assert doctor.read_check(tmp_path, read_region=shifted).status == "fail"


def test_openslide_library_check_reports_versions():
    import openslide

    check = doctor.openslide_library_check()
    assert check.status in ("ok", "warn")
    assert openslide.__library_version__ in check.detail


def test_torch_check_on_cpu():
    check = doctor.torch_check("cpu")
    assert check.status in ("ok", "warn") and "device cpu" in check.detail


def test_torch_check_fails_on_a_missing_device():
    assert doctor.torch_check("cuda:99").status == "fail"


def test_disk_check_thresholds(tmp_path):
    assert doctor.disk_check(tmp_path / "not" / "yet", min_free_gb=0.0).status == "ok"
    failed = doctor.disk_check(tmp_path, min_free_gb=1e12)
    assert failed.status == "fail" and "--min-free-gb" in failed.detail


def test_exit_code_only_for_essential_failures():
    ok = Check("a", "ok", "")
    assert doctor.exit_code([ok, Check("b", "warn", "")]) == 0
    assert doctor.exit_code([ok, Check("enc", "fail", "", essential=False)]) == 0
    assert doctor.exit_code([ok, Check("disk", "fail", "")]) == 1


def test_format_table_lines_up():
    table = doctor.format_table([Check("openslide", "ok", "4.0"), Check("disk", "fail", "full")])
    lines = table.splitlines()
    assert lines[0].startswith("openslide  ok") and lines[1].startswith("disk       FAIL  full")


def test_guarded_turns_a_crash_into_a_failed_line():
    def boom():
        raise RuntimeError("kaput")

    [line] = doctor._guarded("thing", boom)
    assert line.status == "fail" and "kaput" in line.detail


def test_encoders_check_lists_the_registry_and_the_default_is_ready():
    from features.params import DEFAULT_ENCODER
    from features.registry import list_encoders

    checks = doctor.encoders_check()
    assert [c.name for c in checks] == [f"encoder {s.name}" for s in list_encoders()]
    default = next(c for c in checks if c.name == f"encoder {DEFAULT_ENCODER}")
    assert default.status == "ok" and default.essential


def test_doctor_command_prints_the_table_and_exits_zero_here(tmp_path, capsys):
    from wsi_mil.cli import main

    assert main(["doctor", "--out", str(tmp_path), "--min-free-gb", "0"]) == 0
    out = capsys.readouterr().out
    for name in ("openslide read", "torch", "encoder efficientnet_lite0", "disk"):
        assert name in out
