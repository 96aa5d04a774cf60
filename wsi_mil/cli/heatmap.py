"""``wsi-mil heatmap``: overlays, segmentation outlines, top-k tiles, zarr and QuPath GeoJSON.

The flags are the fields of :class:`~wsi_mil.heatmaps.params.HeatmapParams` (the ``heatmap``
config section); the work is :func:`wsi_mil.pipeline.heatmap.heatmap_slides`.
"""

from __future__ import annotations

import argparse

from wsi_mil.cli.executor_options import add_executor_options, executor_from_args
from wsi_mil.cli.options import add_options, add_renamed, options_from_args
from wsi_mil.heatmaps.params import HeatmapParams
from wsi_mil.project import Project


def run(args: argparse.Namespace) -> int:
    from wsi_mil.pipeline.heatmap import STAGE, heatmap_slides

    params = options_from_args(HeatmapParams, args)
    executor = executor_from_args(args, workers=args.workers)
    # the heatmaps folder itself (one subfolder per slide, and failures.csv)
    result = heatmap_slides(
        args.predictions,
        out=Project(args.heatmaps, heatmaps=args.heatmaps),
        params=params,
        slides_dir=args.slides,
        tiles_dir=args.tiles,
        encoder=args.encoder,
        weights=args.weights,
        workers=args.workers,
        overwrite=args.overwrite,
        executor=executor,
        explanations_dir=args.explanations,
    )
    print(result.summary(STAGE))
    return result.exit_code


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "heatmap",
        help="heatmap overlays, segmentation outlines, zarr and QuPath GeoJSON",
        description="Render each slide's predictions: overlay.png (attention heatmap on the "
        "thumbnail), segmentation.png, topk.png, heatmap.zarr (OME-Zarr, for napari) and "
        "tiles.geojson / segmentation.geojson (drag onto the slide in QuPath).",
    )
    p.add_argument("--predictions", required=True, help="folder of <slide_id>.h5 predictions")
    add_renamed(
        p,
        "--heatmaps",
        "--out",
        required=True,
        help="heatmaps folder to write (PROJECT/heatmaps): one subfolder per slide",
    )
    p.add_argument("--slides", help="folder of slides (default: slide_path in the predictions)")
    p.add_argument(
        "--tiles",
        help="tiles folder holding <slide_id>.tissue.geojson "
        "(default: beside the tiles file recorded in the predictions)",
    )
    p.add_argument("--encoder", help="encoder for --rollout (default: the one in the predictions)")
    p.add_argument("--weights", help="encoder weights file for --rollout")
    p.add_argument(
        "--explanations",
        help="output folder of wsi-mil explain: --score may then "
        "name a stored method (integrated_gradients, relevance, ...)",
    )
    p.add_argument("--workers", type=int, default=1, help="slides rendered in parallel")
    p.add_argument("--overwrite", action="store_true", help="redo slides already complete")
    add_options(p.add_argument_group("heatmaps and exports"), HeatmapParams)
    add_executor_options(p)
    p.set_defaults(func=run)
