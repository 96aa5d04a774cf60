"""The last step of ``scripts/gpu_check.sh``: every figure in one JSON, the headline ones printed.

Reads what the steps left in ``--out`` (``pytest.xml``, ``features.json``, ``training.json``,
``pipeline.json``) and the steps' status table, writes ``gpu_check.json`` and prints a compact
summary. A step that failed or timed out has no figures and says so; nothing is filled in.
Exits 1 unless every step is ok.

    python scripts/gpu_check_summary.py --out DIR --status STATUS.tsv --device cuda --seconds S
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_counts(path: Path) -> dict[str, int] | None:
    """Passed, failed, errors and skipped of a JUnit XML file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {
        k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")
    }
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed_tests"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for suite in suites
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return counts


def fmt(value: float | None, digits: int | None = None) -> str:
    """A figure as printed: ``digits`` decimals, else none from 100 on and one below."""
    if value is None:
        return "n/a"
    return f"{value:,.{digits if digits is not None else (0 if abs(value) >= 100 else 1)}f}"


def feature_lines(f: dict[str, Any]) -> list[str]:
    s = f["slide"]
    lines = [
        (
            f"features: slide {s['width']} x {s['height']} px at {s['mpp']} um/px, "
            f"{s['tiles']} tiles of {s['tile_px']} px at {s['tile_mpp']} um/px (level "
            f"{s['read_level']}), {f['cpus']} CPUs, {f.get('gpu') or f['device']}"
        )
    ]
    if f["read_only"]:
        lines.append(
            "  (r) readers alone: "
            + ", ".join(
                f"{r['readers']}: {fmt(r['tiles_per_s'])} tiles/s "
                f"({fmt(r['tiles_per_s_per_reader'])}/reader)"
                for r in f["read_only"]
            )
        )
    for e in f["encoders"]:
        extra = "".join(
            f", {fmt(v)} at batch {b}" for b, v in e.get("a_tiles_per_s_by_batch_size", {}).items()
        )
        lines.append(
            f"  {e['encoder']} ({e['dim']}-d, {e['weights']}), batch {e['batch_size']}:"
            f" (a) {fmt(e['a_tiles_per_s'])} tiles/s{extra}; (b) "
            + ", ".join(
                f"{b['readers']} readers {fmt(b['tiles_per_s'])} ({b['b_over_a']:.2f} of (a))"
                for b in e["b"]
            )
        )
    return lines


def training_lines(t: dict[str, Any]) -> list[str]:
    e, p = t["epoch"], t["predict"]

    def gpu(r: dict[str, Any]) -> str:
        return f", GPU peak {r['peak_gpu_gb']} GB" if r.get("peak_gpu_gb") is not None else ""

    return [
        (
            f"training: {e['bags']} bags x {t['tiles_per_bag']} tiles x {t['dim']} on "
            f"{e['device']}: {e['epoch_s']} s/epoch (each: {e['epochs_s']} s; "
            f"{'in memory' if e['in_memory'] else 'streamed'}, loaded in "
            f"{e['load_or_scan_s']} s), peak RSS {e['peak_rss_gb']} GB{gpu(e)}"
        ),
        (
            f"predict: {p['tiles']} tiles in {p['predict_s']} s, peak RSS "
            f"{p['peak_rss_gb']} GB{gpu(p)}"
        ),
    ]


def pipeline_lines(p: dict[str, Any]) -> list[str]:
    lines = []
    for name, r in p["precision"].items():
        lines.append(
            f"precision, {name} on {r['tiles']} tiles ({p['device']} vs CPU float32):"
            f" relative L2 max {r['max_relative_l2']:.2e}, median "
            f"{r['median_relative_l2']:.2e}; max |diff| / max |f| "
            f"{r['max_abs_diff_over_max_abs']:.2e}; min cosine {r['min_cosine']:.6f};"
            f" without autocast: relative L2 max {r['float32_max_relative_l2']:.2e}"
        )
    a = p["agreement"]
    dc, fc = a["device_vs_cpu"], a["device_features_trained_on_cpu_vs_cpu"]
    auc = ", ".join(f"{k} {fmt(v, 3)}" for k, v in a["test_auc"].items())
    lines.append(
        f"agreement on {a['test_slides']} held-out slides: device-trained vs CPU-trained"
        f" {dc['same_label']}/{dc['slides']} same label, max |dp| {dc['max_prob_diff']};"
        f" device features trained on CPU vs CPU {fc['same_label']}/{fc['slides']}, max"
        f" |dp| {fc['max_prob_diff']}; test AUC {auc} ({p['encoder']['weights']})"
    )
    x = p["explain"]
    big = x["big_bag"]
    lines.append(
        f"explain ({', '.join(x['methods_run'])}) on {x['slides']} slides of median "
        f"{x['tiles_per_slide_median']} tiles: "
        + ", ".join(f"{m} {s} s/slide" for m, s in x["method_seconds_per_slide_median"].items())
        + f" (CLI {x['cli_seconds_per_slide']} s/slide with scores and figures); "
        f"{big['tiles']}-tile bag: "
        + ", ".join(
            f"{m} {r['seconds']} s"
            + (f" (GPU peak {r['peak_gpu_gb']} GB)" if r["peak_gpu_gb"] is not None else "")
            for m, r in big["methods"].items()
        )
    )
    s = p["segment"]
    line = (
        f"segment ({s['net']}) on {s['slides']} slides: {s['seconds_per_slide_median']} "
        f"s/slide (median of segment.json; {s['tiles_segmented_median']} tiles segmented), "
        f"segment-train {s['segment_train_seconds']} s"
    )
    if "big_slide" in s:
        b = s["big_slide"]
        line += (
            f"; {b['slide_px'][0]} x {b['slide_px'][1]} px slide, {b['lesion_mm']} mm "
            f"flagged ({b['tiles_segmented']} tiles): {b['seconds']} s"
        )
    lines.append(line)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--status", type=Path, required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    steps = {}
    for line in args.status.read_text().splitlines():
        name, status, seconds = line.split("\t")
        steps[name] = {"status": status, "seconds": float(seconds)}
    figures = {
        "tests": test_counts(args.out / "pytest.xml"),
        "features": read_json(args.out / "features.json"),
        "training": read_json(args.out / "training.json"),
        "pipeline": read_json(args.out / "pipeline.json"),
    }
    gpu = next(
        (f.get("gpu") for f in figures.values() if isinstance(f, dict) and f.get("gpu")), None
    )
    summary = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "gpu": gpu,
        "seconds": args.seconds,
        "steps": steps,
        **figures,
    }
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")

    ok = all(s["status"] == "ok" for s in steps.values())
    print(
        f"\n==== GPU check summary: {args.device} ({gpu or 'no GPU'}), {summary['date']}, "
        f"{args.seconds:.0f} s; steps: "
        + ", ".join(f"{k} {v['status']} ({v['seconds']:.0f} s)" for k, v in steps.items())
    )
    t = figures["tests"]
    if t is not None:
        print(
            f"tests: {t['passed']} passed, {t['failures']} failed, {t['errors']} errors, "
            f"{t['skipped']} skipped" + "".join(f"\n  FAILED {n}" for n in t["failed_tests"])
        )
    for key, lines in (
        ("features", feature_lines),
        ("training", training_lines),
        ("pipeline", pipeline_lines),
    ):
        if figures[key] is None:
            print(f"{key}: no figures ({steps.get(key, {}).get('status', 'not run')})")
            continue
        try:
            print("\n".join(lines(figures[key])))
        except (KeyError, TypeError) as exc:  # a partial file: say so, keep the rest
            print(f"{key}: figures incomplete ({type(exc).__name__}: {exc}); see {key}.json")
    print(f"every figure: {args.out / 'gpu_check.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
