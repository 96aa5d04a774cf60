"""The viewer's web app through Flask's test client: tiles, alignment, refusals, ratings."""

from __future__ import annotations

import io
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsi_mil.heatmaps.render import colormap_lut
from wsi_mil.viewer.app import create_app, is_loopback
from wsi_mil.viewer.params import ViewerParams
from wsi_mil.viewer.project import ProjectIndex
from wsi_mil.viewer.service import ViewerService


def client(root: Path, **params):
    service = ViewerService(ProjectIndex.build(root), ViewerParams(**params))
    return create_app(service).test_client(), service


def dzi_size(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, tile size, overlap) of a DZI descriptor."""
    image = ET.fromstring(data)
    size = image.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    return (
        int(size.get("Width")),
        int(size.get("Height")),
        int(image.get("TileSize")),
        int(image.get("Overlap")),
    )


def decode(data: bytes) -> np.ndarray:
    """RGB pixels of a JPEG, RGBA of a PNG (indexed heat tiles included)."""
    image = Image.open(io.BytesIO(data))
    return np.asarray(image.convert("RGBA" if image.format == "PNG" else "RGB"))


def files_outside_ratings(root: Path) -> dict[str, float]:
    return {
        str(p.relative_to(root)): p.stat().st_mtime
        for p in root.rglob("*")
        if "ratings" not in p.relative_to(root).parts
    }


def test_real_slide_dzi_and_tiles(shared_slide, tmp_path: Path) -> None:
    """A real SVS from ../shared/data: the descriptor, and tiles decoding at its sizes."""
    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "CMU-1-Small-Region.svs").symlink_to(shared_slide("CMU-1-Small-Region.svs"))
    (slides / "nonconformant-dicom.dcm").symlink_to(shared_slide("nonconformant-dicom.dcm"))
    (slides / "kidney-48-5-stripped.tif").symlink_to(shared_slide("kidney-48-5-stripped.tif"))
    index = ProjectIndex.build(tmp_path, slides=slides)
    app = create_app(ViewerService(index)).test_client()
    response = app.get("/slides/CMU-1-Small-Region.dzi")
    assert response.status_code == 200
    width, height, size, overlap = dzi_size(response.data)
    assert (width, height) == (2220, 2967)
    top = int(np.ceil(np.log2(max(width, height))))
    for level, col, row in ((top, 0, 0), (top, 8, 11), (top - 3, 1, 0), (0, 0, 0)):
        scale = 2 ** (top - level)
        level_w, level_h = -(-width // scale), -(-height // scale)
        tile = app.get(f"/slides/CMU-1-Small-Region_files/{level}/{col}_{row}.jpeg")
        assert tile.status_code == 200 and tile.mimetype == "image/jpeg"
        expect_w = (
            min(size, level_w - size * col)
            + overlap * (col > 0)
            + overlap * (col < -(-level_w // size) - 1)
        )
        expect_h = (
            min(size, level_h - size * row)
            + overlap * (row > 0)
            + overlap * (row < -(-level_h // size) - 1)
        )
        assert decode(tile.data).shape == (expect_h, expect_w, 3)
    # the DICOM OpenSlide cannot open is reported, and the SVS still works
    detail = app.get("/api/slides/nonconformant-dicom").get_json()
    assert detail["error"] and "nonconformant-dicom" in detail["error"]
    assert app.get("/slides/nonconformant-dicom.dzi").status_code == 404
    assert app.get("/slides/CMU-1-Small-Region_files/0/0_0.jpeg").status_code == 200
    # a plain TIFF OpenSlide reads through its image fallback
    width, height, _, _ = dzi_size(app.get("/slides/kidney-48-5-stripped.dzi").data)
    assert (width, height) == (1493, 901)
    assert decode(app.get("/slides/kidney-48-5-stripped_files/11/0_0.jpeg").data).shape == (
        255,
        255,
        3,
    )  # a corner tile overlaps on two sides only


def _tile_at(service: ViewerService, slide_id: str, level: int, x: float, y: float):
    """(col, row, pixel x, pixel y) of level-0 point (x, y) in a Deep Zoom level."""
    state = service.state(slide_id)
    scale = 2 ** (state.deepzoom.level_count - 1 - level)
    size = service.params.tile_size
    zx, zy = x / scale, y / scale
    col, row = int(zx // size), int(zy // size)
    window = service.window(state, level, col, row)
    return col, row, int(zx - window.x), int(zy - window.y)


@pytest.mark.parametrize(("tile_size", "overlap"), [(254, 1), (256, 0)])
@pytest.mark.parametrize("levels_down", [0, 2])
def test_heat_lines_up_with_slide(
    project: Path, planted, levels_down: int, tile_size: int, overlap: int
) -> None:
    """The planted tile's heat is the top colour exactly where the slide shows its square."""
    app, service = client(project, tile_size=tile_size, overlap=overlap)
    top = service.state("planted").deepzoom.level_count - 1
    level = top - levels_down
    scale = 2**levels_down
    px, py = planted.planted
    hot = colormap_lut(service.cmap)[255]
    inside = (px + planted.tile / 2, py + planted.tile / 2)
    beside = (px + planted.tile / 2 + 2 * planted.tile, py + planted.tile / 2)  # a cooler tile
    # just inside and just outside the planted tile's edges (one level pixel margin)
    edges = [
        ((px + scale, py + scale), True),
        ((px + planted.tile - scale, py + scale), True),
        ((px - 2 * scale, py + scale), False),
        ((px + planted.tile + scale, py + 3), False),
    ]
    for (x, y), is_hot in [(inside, True), (beside, False), *edges]:
        col, row, ix, iy = _tile_at(service, "planted", level, x, y)
        slide = decode(app.get(f"/slides/planted_files/{level}/{col}_{row}.jpeg").data)
        heat = decode(app.get(f"/layers/planted/attention_files/{level}/{col}_{row}.png").data)
        assert heat.shape[:2] == slide.shape[:2] and heat.shape[2] == 4
        assert heat[iy, ix, 3] == 255
        slide_dark = slide[iy, ix].astype(int).sum() < 350  # purple vs pink
        heat_hot = np.abs(heat[iy, ix, :3].astype(int) - hot).max() <= 2
        assert slide_dark == is_hot and heat_hot == is_hot, (x, y, slide[iy, ix], heat[iy, ix])
    # glass outside the tissue: transparent heat
    col, row, ix, iy = _tile_at(service, "planted", level, 100, 100)
    heat = decode(app.get(f"/layers/planted/attention_files/{level}/{col}_{row}.png").data)
    assert heat[iy, ix, 3] == 0


def test_zarr_and_predictions_give_the_same_heat(
    tmp_path: Path, planted_slide: Path, planted
) -> None:
    with_zarr, service_z = client(planted.make_project(tmp_path / "z", planted_slide))
    without, service_p = client(planted.make_project(tmp_path / "p", planted_slide, zarr=False))
    assert service_z.index.slides["planted"].zarr_path is not None
    assert service_p.index.slides["planted"].zarr_path is None
    layers = [layer["id"] for layer in with_zarr.get("/api/slides/planted").get_json()["layers"]]
    assert layers == [
        layer["id"] for layer in without.get("/api/slides/planted").get_json()["layers"]
    ]
    assert {"attention", "prob_tumor", "tissue"} <= set(layers)
    top = service_z.state("planted").deepzoom.level_count - 1
    for level, col, row in ((top, 5, 2), (top - 1, 2, 1), (top - 4, 0, 0)):
        for layer in ("attention", "prob_tumor"):
            url = f"/layers/planted/{layer}_files/{level}/{col}_{row}.png"
            np.testing.assert_array_equal(
                decode(with_zarr.get(url).data), decode(without.get(url).data)
            )


def test_measurements_and_explanations(project: Path, planted) -> None:
    import h5py

    from tiling.storage import atomic_output

    with h5py.File(project / "predictions" / "planted.h5", "r") as f:
        n_tiles = f["coords"].shape[0]
    explanations = project / "heatmaps" / "planted" / "explanations.h5"
    with atomic_output(explanations) as tmp, h5py.File(tmp, "w") as f:
        f["gradcam"] = np.arange(n_tiles, dtype=np.float32)
    app, service = client(project)
    detail = app.get("/api/slides/planted").get_json()
    assert "explain_gradcam" in [layer["id"] for layer in detail["layers"]]
    px, py = planted.planted
    m = app.get(f"/api/slides/planted/at?x={px + 10}&y={py + 10}").get_json()
    assert (m["x"], m["y"]) == (px, py)
    assert m["percentile"] == 1.0 and m["probs"]["tumor"] == pytest.approx(0.95)
    assert "gradcam" in m["explanations"]
    assert app.get("/api/slides/planted/at?x=5&y=5").get_json()["tile"] is None
    level = service.state("planted").deepzoom.level_count - 1
    tile = app.get(f"/layers/planted/explain_gradcam_files/{level}/5_2.png")
    assert tile.status_code == 200 and decode(tile.data)[..., 3].max() == 255


def test_an_explanation_layer_shows_its_trust_figures(project: Path) -> None:
    """The explain stage's layout (OUT/explain/<slide>/explanations.h5, OUT/explain/trust.json):
    each map's method, faithfulness and sanity on the slide; a map failing sanity says so."""
    import json

    import h5py

    from tiling.storage import atomic_output

    with h5py.File(project / "predictions" / "planted.h5", "r") as f:
        n_tiles = f["coords"].shape[0]
    explanations = project / "explain" / "planted" / "explanations.h5"
    explanations.parent.mkdir(parents=True)
    scores = {
        "lrp": {
            "srg": 0.3,
            "morf_aupc": 0.4,
            "lerf_aupc": 0.7,
            "random_aupc": 0.55,
            "sanity_spearman": 0.1,
            "sanity_flagged": 0.0,
        },
        "segmentation": {"srg": 0.1, "sanity_spearman": 0.8, "sanity_flagged": 1.0},
    }
    with atomic_output(explanations) as tmp, h5py.File(tmp, "w") as f:
        for method in scores:
            f[method] = np.arange(n_tiles, dtype=np.float32)
        f["lesion_fraction"] = np.zeros(n_tiles, dtype=np.float32)
        f.attrs.update(
            methods=json.dumps(list(scores)),
            scores=json.dumps(scores),
            fold=1,
            in_sample=False,
            complete=True,
        )
    (project / "explain" / "trust.json").write_text(json.dumps({"recommended": "lrp"}))
    app, _ = client(project)
    layers = {layer["id"]: layer for layer in app.get("/api/slides/planted").get_json()["layers"]}
    assert "explain_lesion_fraction" not in layers  # not a method
    lrp, seg = layers["explain_lrp"], layers["explain_segmentation"]
    assert not lrp["trust"]["fails_sanity"] and "FAILS" not in lrp["label"]
    assert "LeRF \u2212 MoRF AUPC 0.30" in lrp["trust"]["caption"]
    assert "fold 1, out of sample" in lrp["trust"]["caption"]
    assert "recommended for this run: lrp" in lrp["trust"]["caption"]
    assert seg["trust"]["fails_sanity"] and "FAILS THE SANITY CHECK" in seg["label"]
    assert "FAILS THE SANITY CHECK" in seg["trust"]["caption"]
    assert layers["attention"]["trust"] is None


REFUSED = [
    ("/slides/nothere.dzi", 404),
    ("/slides/planted_files/99/0_0.jpeg", 404),
    ("/slides/planted_files/11/999_0.jpeg", 404),
    ("/slides/planted_files/11/0_999.jpeg", 404),
    ("/slides/planted_files/-1/0_0.jpeg", 404),
    ("/slides/planted_files/x/0_0.jpeg", 404),
    ("/slides/planted_files/11/a_b.jpeg", 404),
    ("/slides/planted_files/11/0_0.png", 404),
    ("/layers/planted/nolayer.dzi", 404),
    ("/layers/planted/attention_files/99/0_0.png", 404),
    ("/layers/planted/..%2F..%2Fpredictions%2Fplanted.h5_files/0/0_0.png", 404),
    ("/slides/..%2Fslides%2Fplanted.dzi", 404),
    ("/slides/%2Fetc%2Fpasswd.dzi", 404),
    ("/static/../predictions.csv", 404),
    ("/static/..%2F..%2Fservice.py", 404),
    ("/static/%2Fetc%2Fpasswd", 404),
    ("/../../etc/passwd", 404),
    ("/etc/passwd", 404),
    ("/predictions.csv", 404),
    ("/api/slides/..%2Fpredictions", 404),
    ("/api/slides/planted/at?x=abc&y=1", 400),
    ("/api/slides/planted/at?x=1", 400),
    ("/api/slides/planted/at?x=nan&y=1", 400),
    ("/api/slides/planted/at?x=inf&y=1", 400),
]


@pytest.mark.parametrize(("url", "status"), REFUSED)
def test_refused_requests(project: Path, url: str, status: int) -> None:
    app, _ = client(project)
    response = app.get(url)
    assert response.status_code == status
    assert b"Traceback" not in response.data and b'File "' not in response.data
    assert b"PNG" not in response.data[:8] and b"HDF" not in response.data[:8]


def test_foreign_host_names_are_refused_on_loopback(project: Path) -> None:
    app, _ = client(project)
    for host in ("localhost:8765", "127.0.0.1:8765", "[::1]:8765"):
        assert app.get("/api/slides", headers={"Host": host}).status_code == 200
    response = app.get("/api/slides", headers={"Host": "rebound.example.com:8765"})
    assert response.status_code == 400 and b"planted" not in response.data


def test_symlink_out_of_the_project_is_not_served(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(project / "heatmaps" / "planted", outside)
    shutil.rmtree(project / "heatmaps" / "planted")
    (project / "heatmaps" / "planted").symlink_to(outside, target_is_directory=True)
    os.replace(project / "tiles" / "planted.tissue.geojson", tmp_path / "tissue.geojson")
    (project / "tiles" / "planted.tissue.geojson").symlink_to(tmp_path / "tissue.geojson")
    app, service = client(project)
    entry = service.index.slides["planted"]
    assert entry.heatmap_dir is None and entry.zarr_path is None and entry.tissue_path is None
    assert any("outside the project" in p for p in entry.problems)
    layers = [layer["id"] for layer in app.get("/api/slides/planted").get_json()["layers"]]
    assert "tissue" not in layers  # the heat comes from the predictions inside the project
    assert app.get("/layers/planted/tissue.dzi").status_code == 404


def test_broken_slide_is_reported_and_the_rest_works(project: Path) -> None:
    app, _ = client(project)
    listed = {s["slide_id"] for s in app.get("/api/slides").get_json()}
    assert listed == {"planted", "broken"}
    detail = app.get("/api/slides/broken").get_json()
    assert detail["error"] and "broken.tiff" in detail["error"]
    assert app.get("/slides/broken.dzi").status_code == 404
    assert app.get("/layers/broken/attention_files/11/0_0.png").status_code == 404
    assert app.get("/slides/planted.dzi").status_code == 200


def test_ratings_saved_atomically_and_nowhere_else(project: Path) -> None:
    before = files_outside_ratings(project)
    app, _ = client(project, rater="dr_a")
    for url in (
        "/",
        "/api/config",
        "/api/slides",
        "/slides/planted.dzi",
        "/slides/planted_files/11/0_0.jpeg",
        "/layers/planted/lesions.dzi",
    ):
        app.get(url)
    answer = {"match": 4, "understand": 5, "plausible": 3, "trust": "2", "comment": "ok, da"}
    response = app.post("/api/slides/planted/rating", json=answer)
    assert response.status_code == 200 and response.get_json()["file"] == "dr_a.csv"
    text = (project / "ratings" / "dr_a.csv").read_text()
    assert (
        text.splitlines()[0] == "slide_id,rater,match,understand,plausible,trust,comment,submitted"
    )
    assert text.splitlines()[1].startswith('planted,dr_a,4,5,3,2,"ok, da",')
    app.post("/api/slides/planted/rating", json={**answer, "trust": 5})  # replaces the row
    app.post("/api/slides/broken/rating", json=answer)
    lines = (project / "ratings" / "dr_a.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[2].startswith("planted,dr_a,4,5,3,5,")
    assert app.get("/api/slides/planted/rating").get_json()["rating"]["trust"] == 5
    for bad in (
        {**answer, "match": 6},
        {**answer, "match": 0},
        {"match": 1},
        {**answer, "trust": True},
        [1, 2],
        "text",
    ):
        assert app.post("/api/slides/planted/rating", json=bad).status_code == 400
    assert (
        app.post(
            "/api/slides/planted/rating", data="{", content_type="application/json"
        ).status_code
        == 400
    )
    assert app.post("/api/slides/elsewhere/rating", json=answer).status_code == 404
    assert sorted(p.name for p in (project / "ratings").iterdir()) == ["dr_a.csv"]
    assert files_outside_ratings(project) == before


def test_without_rater_ratings_are_read_only(project: Path) -> None:
    app, _ = client(project)
    answer = {"match": 4, "understand": 5, "plausible": 3, "trust": 2}
    assert app.post("/api/slides/planted/rating", json=answer).status_code == 403
    assert not (project / "ratings").exists()


def test_bad_rater_name_and_project() -> None:
    from wsi_mil.viewer.project import ProjectError
    from wsi_mil.viewer.ratings import RatingError, check_rater

    for name in ("../x", ".hidden", "a/b", "", "x" * 65, "/abs"):
        with pytest.raises(RatingError):
            check_rater(name)
    assert check_rater("dr.smith-2") == "dr.smith-2"
    with pytest.raises(ProjectError, match="not found"):
        ProjectIndex.build("/nonexistent/project")


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
