"""``wsi-mil explain``: every explanation method on every slide of a run, scored against lesions.

The flags are the fields of :class:`~wsi_mil.explain.params.ExplainParams` (the ``explain``
config section); the work is :func:`wsi_mil.pipeline.explain.explain_slides`.
"""

from __future__ import annotations

import argparse

from wsi_mil.cli.executor_options import add_executor_options, executor_from_args
from wsi_mil.cli.options import add_options, add_renamed, options_from_args
from wsi_mil.explain.params import ExplainParams
from wsi_mil.project import Project


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.explain import STAGE, explain_slides

    params = options_from_args(ExplainParams, args)
    # the explanations folder itself (one subfolder per slide, the cohort table, failures.csv)
    result = explain_slides(
        args.run,
        args.features,
        out=Project(args.explanations, explanations=args.explanations),
        params=params,
        annotations_dir=args.annotations,
        slides_dir=args.slides,
        workers=args.workers,
        overwrite=args.overwrite,
        executor=executor_from_args(args, workers=args.workers),
    )
    print(result.summary(STAGE))
    print(f"trust report and cohort table: {args.explanations}/cohort_table.md")
    _print_recommendation(args.explanations)
    return result.exit_code


def _print_recommendation(out: str) -> None:
    import json
    from pathlib import Path

    path = Path(out) / "trust.json"
    if not path.is_file():
        return
    trust = json.loads(path.read_text(encoding="utf-8"))
    left = len(trust.get("in_sample_left_out", []))
    best = trust.get("recommended") or (
        f"none passes the sanity check (most faithful: {trust.get('most_faithful')})"
    )
    print(
        f"scored {trust.get('scored', 0)} out-of-sample slides ({left} in sample left out); "
        f"recommended method: {best}"
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain",
        help="explanation methods per slide, ranked by sanity, faithfulness and localisation",
        description="For each feature bag, explained out of fold (by the fold model that held "
        "the slide out): explanations.h5 (attention, rollout, chefer_iccv2021, chefer_cvpr2021, "
        "lrp, gradient x input, integrated gradients, attention x gradient, perturbation, "
        "keep_one, segmentation, random) and comparison.png; for the out-of-sample slides: "
        "cohort_table.csv/.md (the trust report: methods ranked by the model-randomisation "
        "sanity check and faithfulness, i.e. patch flipping MoRF/LeRF AUPC against random "
        "orders, with the recommended method; then lesion mass, pointing game, energy pointing "
        "game, tile AUC/AP where lesions are annotated; mean and bootstrap 95% CI), trust.json "
        "and cohort_scores.png. Full method list and figures: docs/explanations.md.",
    )
    p.add_argument("--run", required=True, help="run folder of wsi-mil train")
    p.add_argument("--features", required=True, help="folder of <slide_id>.h5 feature bags")
    add_renamed(
        p,
        "--explanations",
        "--out",
        required=True,
        help="explanations folder to write (PROJECT/explain): one subfolder per slide, "
        "the cohort table",
    )
    p.add_argument(
        "--annotations",
        help="folder of <slide_id>.xml/.geojson/.json lesion "
        "annotations (without it only the sanity check is scored)",
    )
    p.add_argument(
        "--slides", help="folder of slides for the thumbnails (default: slide_path in the bags)"
    )
    p.add_argument("--workers", type=int, default=1, help="slides explained in parallel")
    p.add_argument("--overwrite", action="store_true", help="redo slides already complete")
    add_options(p.add_argument_group("explanations and scores"), ExplainParams)
    add_executor_options(p)
    p.set_defaults(func=run)
