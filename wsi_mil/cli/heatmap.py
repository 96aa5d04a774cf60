"""``wsi-mil heatmap``: overlays, segmentation outlines, top-k tiles, zarr and QuPath GeoJSON.

One folder per slide, ``OUT/<slide_id>/``, from ``PREDICTIONS/<slide_id>.h5``; the batch skips
slides whose folder already holds every requested output, records failures in
``OUT/failures.csv`` and exits non-zero when a slide failed.
"""

from __future__ import annotations

import argparse

from wsi_mil.heatmaps.stitch import FORMATS, NORMALISATIONS, HeatmapParams
from wsi_mil.pipeline.heatmap import STAGE, heatmap_slides


def _formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"formats must be a comma-separated subset of "
                                         f"{','.join(FORMATS)}, got {text!r}")
    return formats


def params_from_args(args: argparse.Namespace) -> HeatmapParams:
    """The :class:`HeatmapParams` given on the command line (defaults for the rest)."""
    return HeatmapParams(
        max_side=args.max_side, mpp=args.mpp, score=args.score, normalize=args.normalize,
        smooth_um=args.smooth_um, cmap=args.cmap, alpha=args.alpha,
        tissue_clip=not args.no_tissue_clip, topk=args.topk,
        positive_class=args.positive_class, seg_threshold=args.seg_threshold,
        formats=args.formats, ome_zarr_version=args.ome_zarr_version, rollout=args.rollout,
    )


def run(args: argparse.Namespace) -> int:
    try:
        params = params_from_args(args)
        result = heatmap_slides(args.predictions, args.out, params, slides_dir=args.slides,
                                tiles_dir=args.tiles, encoder=args.encoder, weights=args.weights,
                                workers=args.workers, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError) as exc:  # bad parameters or folders: one clear line
        print(f"wsi-mil heatmap: error: {exc}")
        return 2
    print(result.summary(STAGE))
    return result.exit_code


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    defaults = HeatmapParams()
    p = subparsers.add_parser(
        STAGE, help="heatmap overlays, segmentation outlines, zarr and QuPath GeoJSON",
        description="Render each slide's predictions: overlay.png (attention heatmap on the "
        "thumbnail), segmentation.png, topk.png, heatmap.zarr (OME-Zarr, for napari) and "
        "tiles.geojson / segmentation.geojson (drag onto the slide in QuPath).")
    p.add_argument("--predictions", required=True, help="folder of <slide_id>.h5 predictions")
    p.add_argument("--out", required=True, help="output folder (one subfolder per slide)")
    p.add_argument("--slides", help="folder of slides (default: slide_path in the predictions)")
    p.add_argument("--tiles", help="tiles folder holding <slide_id>.tissue.geojson "
                   "(default: beside the tiles file recorded in the predictions)")
    p.add_argument("--formats", type=_formats, default=defaults.formats,
                   help=f"comma-separated outputs (default {','.join(defaults.formats)})")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--max-side", type=int, default=defaults.max_side,
                      help=f"longest side of the overlay in px (default {defaults.max_side})")
    size.add_argument("--mpp", type=float, default=None, help="overlay resolution in µm/px")
    p.add_argument("--score", default=defaults.score,
                   help="'attention' or a class name (that class's tile probability)")
    p.add_argument("--normalize", choices=NORMALISATIONS, default=defaults.normalize,
                   help="rank = percentile (CLAM's default), minmax, raw")
    p.add_argument("--smooth-um", type=float, default=defaults.smooth_um,
                   help="Gaussian smoothing sigma in µm (0 = off)")
    p.add_argument("--cmap", default=defaults.cmap, help="matplotlib colour map")
    p.add_argument("--alpha", type=float, default=defaults.alpha, help="heatmap opacity 0..1")
    p.add_argument("--no-tissue-clip", action="store_true",
                   help="show heat on every tile, not only inside the tissue polygons")
    p.add_argument("--topk", type=int, default=defaults.topk,
                   help="most attended tiles in topk.png (0 = none)")
    p.add_argument("--positive-class", default=None,
                   help="class outlined in segmentation outputs (default: the last class)")
    p.add_argument("--seg-threshold", type=float, default=defaults.seg_threshold,
                   help="tile probability threshold of the segmentation")
    p.add_argument("--ome-zarr-version", choices=("0.4", "0.5"),
                   default=defaults.ome_zarr_version, help="OME-Zarr metadata version")
    p.add_argument("--rollout", action="store_true",
                   help="attention rollout of a ViT encoder over the top-k tiles")
    p.add_argument("--encoder", help="encoder for --rollout (default: the one in the predictions)")
    p.add_argument("--weights", help="encoder weights file for --rollout")
    p.add_argument("--workers", type=int, default=1, help="slides rendered in parallel")
    p.add_argument("--overwrite", action="store_true", help="redo slides already complete")
    p.set_defaults(func=run)

