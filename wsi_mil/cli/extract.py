"""``wsi-mil extract``: tiles files -> feature bags ``OUT/<encoder>/<slide_id>.h5``.

The encoder is loaded once and the slides are encoded one after another, each with its own
parallel tile readers (the parallelism is inside a slide, where the encoder is the bottleneck).
A slide is found from its tiles file's ``slide_path``, or by slide id under ``--slides DIR``
when the slides were moved since tiling. Complete bags made from the same tiles with the same
weights are skipped; failures go to ``OUT/failures.csv`` and make the exit code non-zero.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from features.params import DTYPES, ExtractParams
from wsi_mil.pipeline.extract import STAGE, extract_slides


def run(args: argparse.Namespace) -> int:
    from features.registry import EncoderError
    from features.weights import WeightsError
    from tiling.discover import SlideDiscoveryError

    try:
        params = ExtractParams(batch_size=args.batch_size, workers=args.workers,
                               device=args.device, dtype=args.dtype, threads=args.threads)
        result = extract_slides(args.tiles, args.out, args.encoder, args.weights, params,
                                args.slides, args.overwrite)
    except (EncoderError, WeightsError, SlideDiscoveryError, FileNotFoundError,
            ValueError) as exc:
        print(f"wsi-mil extract: error: {exc}", file=sys.stderr)
        return 2
    print(result.summary(STAGE))
    return result.exit_code


def add_parser(subparsers: Any) -> None:
    defaults = ExtractParams()
    p = subparsers.add_parser(
        "extract", help="encode tiles into feature bags (timm encoders)",
        description="Read every tile of every tiles file through OpenSlide, encode it and write "
        "OUT/<encoder>/<slide_id>.h5. Slides whose bag is complete are skipped.",
    )
    p.add_argument("--tiles", required=True, type=Path,
                   help="folder of tiles files (<slide_id>.h5 from `wsi-mil tile`) or one file")
    p.add_argument("--encoder", default="efficientnet_lite0",
                   help="registry name (see `wsi-mil encoders`) or timm:<architecture> "
                   "(default: %(default)s)")
    p.add_argument("--weights", default=None,
                   help="weights file (.safetensors/.pth/.bin) or hf-hub:<repo>; default: the "
                   "encoder's bundled weights, weights folder or Hugging Face cache")
    p.add_argument("--out", required=True, type=Path,
                   help="features folder; bags go to OUT/<encoder>/")
    p.add_argument("--slides", type=Path, default=None,
                   help="folder to find slides by slide id when they moved since tiling")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size,
                   help="tiles per forward pass (default: %(default)s)")
    p.add_argument("--workers", type=int, default=defaults.workers,
                   help="tile-reading processes, 0 = main process (default: 1 on a CPU, all "
                   "CPUs but one on a GPU)")
    p.add_argument("--device", default=defaults.device,
                   help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument("--dtype", choices=DTYPES, default=defaults.dtype,
                   help="stored feature precision (default: %(default)s)")
    p.add_argument("--threads", type=int, default=defaults.threads,
                   help="torch threads of an encoder on the CPU (default: the CPUs the "
                   "readers leave free)")
    p.add_argument("--overwrite", action="store_true", help="redo bags that are complete")
    p.set_defaults(func=run)
