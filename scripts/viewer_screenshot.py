"""A screenshot of a running ``wsi-mil view`` page in headless Chromium (the README's figure).

    wsi-mil view PROJECT &
    python scripts/viewer_screenshot.py http://127.0.0.1:8765/ --slide test_002 \\
        --hover 600 1000 --out docs/viewer.png

Waits until the slide and every overlay have drawn, optionally points at a level-0 position
(so the tile panel shows its measurements) and writes an 8-bit palette PNG to keep it small.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="the viewer's URL")
    parser.add_argument("--slide", help="slide id to open")
    parser.add_argument("--out", type=Path, default=Path("viewer.png"))
    parser.add_argument("--opacity", type=int, default=50, help="heat opacity 0-100")
    parser.add_argument(
        "--hover",
        type=float,
        nargs=2,
        metavar=("X", "Y"),
        help="level-0 point to hover (the tile panel shows it)",
    )
    parser.add_argument("--size", type=int, nargs=2, default=(1280, 720), metavar=("W", "H"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": args.size[0], "height": args.size[1]})
        page.goto(args.url + (f"?slide={args.slide}" if args.slide else ""))
        page.wait_for_function("window.wsiViewer && window.wsiViewer.isDrawn()", timeout=120_000)
        page.evaluate(
            """(v) => { const s = document.getElementById('opacity');
            s.value = v; s.dispatchEvent(new Event('input')); }""",
            args.opacity,
        )
        if args.hover:
            x, y = page.evaluate(
                """([x, y]) => {
                const v = window.wsiViewer.viewer;
                const p = v.world.getItemAt(0).imageToViewerElementCoordinates(
                    new OpenSeadragon.Point(x, y));
                const r = v.element.getBoundingClientRect();
                return [p.x + r.left, p.y + r.top]; }""",
                args.hover,
            )
            page.mouse.move(x, y)
            page.wait_for_selector("#measure table")
        page.wait_for_timeout(1000)
        image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        browser.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
        args.out, optimize=True
    )
    print(f"{args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
