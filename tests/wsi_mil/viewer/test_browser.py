"""The page in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

Opens the viewer on the generated project, waits until every layer has drawn, moves the
opacity slider from 0 to 100 % and checks the screenshots: the planted high-attention tile
changes colour, glass outside the tissue does not. Then submits a rating through the form and
checks the CSV. Skipped (with the reason) where Chromium or Playwright is not installed.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = os.environ.get("WSI_MIL_CHROMIUM", "/usr/bin/chromium")

pytestmark = pytest.mark.slow


@pytest.fixture
def browser_page():
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.skip(
            f"Chromium not found at {CHROMIUM} (apt-get install chromium; or set WSI_MIL_CHROMIUM)"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright not installed (pip install playwright)"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page, errors
        browser.close()


@pytest.fixture
def server(project: Path):
    from wsi_mil.viewer.app import make_server, url_of
    from wsi_mil.viewer.params import ViewerParams
    from wsi_mil.viewer.project import ProjectIndex
    from wsi_mil.viewer.service import ViewerService

    params = ViewerParams(port=0, rater="browser_test")
    server = make_server(ViewerService(ProjectIndex.build(project), params), params)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url_of(server, params.host)
    server.shutdown()
    server.server_close()


def screenshot(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)


def screen_point(page, x: float, y: float) -> tuple[int, int]:
    """Page pixel of level-0 slide point (x, y)."""
    return tuple(
        page.evaluate(
            """([x, y]) => {
            const v = window.wsiViewer.viewer;
            const p = v.world.getItemAt(0).imageToViewerElementCoordinates(
                new OpenSeadragon.Point(x, y));
            const r = v.element.getBoundingClientRect();
            return [Math.round(p.x + r.left), Math.round(p.y + r.top)];
        }""",
            [x, y],
        )
    )


def set_opacity(page, percent: int) -> None:
    page.evaluate(
        """(v) => { const s = document.getElementById('opacity');
        s.value = v; s.dispatchEvent(new Event('input', {bubbles: true})); }""",
        percent,
    )
    page.wait_for_function(
        "(v) => document.getElementById('opacity-value').textContent === v + ' %'", arg=percent
    )
    page.wait_for_timeout(400)  # a few animation frames for OpenSeadragon to redraw


def test_slider_changes_heat_only_on_tissue_and_rating_is_saved(
    browser_page, server: str, project: Path, planted, tmp_path: Path
) -> None:
    page, errors = browser_page
    page.goto(server + "?slide=planted")
    page.wait_for_function("window.wsiViewer && window.wsiViewer.isDrawn()", timeout=60_000)
    page.wait_for_timeout(800)  # let the opening animation settle
    set_opacity(page, 0)
    page.wait_for_function("window.wsiViewer.isDrawn()", timeout=60_000)
    at_0 = screenshot(page)
    set_opacity(page, 100)
    at_100 = screenshot(page)
    (tmp_path / "at_0.png").write_bytes(page.screenshot())
    px, py = planted.planted
    hot_x, hot_y = screen_point(page, px + planted.tile / 2, py + planted.tile / 2)
    glass_x, glass_y = screen_point(page, 120, planted.height - 120)
    hot_0, hot_100 = at_0[hot_y, hot_x], at_100[hot_y, hot_x]
    glass_0, glass_100 = at_0[glass_y, glass_x], at_100[glass_y, glass_x]
    assert hot_0.sum() < 350, f"the planted square should look dark purple at 0 %: {hot_0}"
    assert np.abs(hot_100 - hot_0).max() > 60, (hot_0, hot_100)
    assert hot_100[0] > hot_100[2], f"the top of the colour map is red: {hot_100}"
    assert np.abs(glass_100 - glass_0).max() <= 3, (glass_0, glass_100)
    assert glass_0.min() > 200, f"glass should be near white: {glass_0}"

    # the rating panel: four questions, a comment, saved to ratings/browser_test.csv
    for key, score in (("match", 5), ("understand", 4), ("plausible", 4), ("trust", 3)):
        page.check(f"#rating input[name={key}][value='{score}']")
    page.fill("#rating textarea[name=comment]", "attends the square")
    page.click("#rating button[type=submit]")
    page.wait_for_function(
        "document.getElementById('rating-status').textContent.startsWith('saved to')"
    )
    rows = list(csv.DictReader((project / "ratings" / "browser_test.csv").open()))
    assert [
        (r["slide_id"], r["match"], r["understand"], r["plausible"], r["trust"], r["comment"])
        for r in rows
    ] == [("planted", "5", "4", "4", "3", "attends the square")]
    # the keyboard: n opens the next slide (the broken one shows its error, not a blank page)
    page.keyboard.press("n")
    page.wait_for_function("!document.getElementById('error').hidden")
    assert "cannot be shown" in page.inner_text("#error")
    assert not errors, errors
