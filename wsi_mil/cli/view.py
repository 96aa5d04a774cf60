"""``wsi-mil view``: browse a project's slides with the heat on top, and rate the heatmaps.

Starts a local web server (127.0.0.1 unless ``--host`` says otherwise) and prints its URL; the
page needs nothing from the internet. Ratings go to ``PROJECT/ratings/<rater>.csv``.
"""

from __future__ import annotations

import argparse
import sys

from wsi_mil.cli.options import add_options, options_from_args
from wsi_mil.errors import InputError
from wsi_mil.viewer.params import ViewerParams


def run(args: argparse.Namespace) -> int:
    from wsi_mil.extras import require_extra

    require_extra("viewer", "wsi-mil view")  # before indexing the project
    params = options_from_args(ViewerParams, args)
    if params.rater is not None:
        from wsi_mil.viewer.ratings import check_rater

        check_rater(params.rater)
    from wsi_mil.viewer.project import ProjectIndex

    index = ProjectIndex.build(
        args.project,
        predictions=args.predictions,
        heatmaps=args.heatmaps,
        slides=args.slides,
        tiles=args.tiles,
        annotations=args.annotations,
        segment=args.segment,
    )
    import logging

    from wsi_mil.viewer.app import is_loopback, make_server, url_of
    from wsi_mil.viewer.service import ViewerService

    service = ViewerService(index, params)
    try:
        server = make_server(service, params)
    except OSError as exc:  # the port is taken or the address is not this machine's
        raise InputError(f"cannot listen on {params.host}:{params.port} ({exc})") from exc
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per tile request
    if not is_loopback(params.host):
        print(
            f"wsi-mil view: warning: listening on {params.host}, not on this machine only: "
            f"anyone who can reach it sees the slides and can submit ratings",
            file=sys.stderr,
        )
    problems = sum(bool(e.problems) for e in index.slides.values())
    print(
        f"{len(index.slides)} slides from {index.root}"
        + (f" ({problems} with problems, shown in the page)" if problems else "")
    )
    if service.ratings is not None:
        print(f"ratings of {params.rater!r} go to {service.ratings.path}")
    print(f"viewer at {url_of(server, params.host)}  (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "view",
        help="interactive slide viewer with heatmap layers and expert ratings",
        description="Serve a project's slides in the browser: deep-zoom slide, heat layers "
        "(attention, tile probabilities, stored explanations, the pixel segmenter's mask and "
        "its explanation maps) under an opacity slider, "
        "segmentation/tissue/lesion outlines, per-tile measurements, and a rating panel "
        "that saves to PROJECT/ratings/<rater>.csv.",
    )
    p.add_argument("project", nargs="?", help="project folder (the --out of wsi-mil run)")
    p.add_argument(
        "--predictions", help="folder of <slide_id>.h5 predictions (default: PROJECT/predictions)"
    )
    p.add_argument("--heatmaps", help="heatmaps folder (default: PROJECT/heatmaps)")
    p.add_argument("--slides", help="folder of slides (default: slide_path in the predictions)")
    p.add_argument("--tiles", help="folder of <slide_id>.tissue.geojson (default: PROJECT/tiles)")
    p.add_argument(
        "--annotations",
        help="lesion annotations folder (default: the run's evaluate.annotations_dir)",
    )
    p.add_argument(
        "--segment",
        help="folder of the pixel segmenter's <slide_id>/ outputs: "
        "its mask and explanation maps become heat layers (default: PROJECT/segment)",
    )
    add_options(p, ViewerParams)
    p.set_defaults(func=run)
