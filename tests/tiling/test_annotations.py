"""Annotation readers agree with each other, and masks / tile fractions are right by hand."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon

from tiling.annotations import (
    EXCLUSION,
    TUMOR,
    AnnotationError,
    AnnotationWarning,
    find_annotation,
    geometry_mask,
    lesion_mask,
    points_in_tiles,
    read_annotations,
    read_asap_xml,
    tile_fractions,
    write_asap_xml,
)
from tiling.tiles_file import read_tiles_file, write_tiles_file

# One lesion: a 400 x 300 rectangle with a 100 x 100 exclusion island, plus a second small
# triangle lesion. Area = 120000 - 10000 + 0.5 * 60 * 60.
SHELL = [(100, 100), (500, 100), (500, 400), (100, 400)]
HOLE = [(200, 200), (300, 200), (300, 300), (200, 300)]
TRIANGLE = [(700, 100), (760, 100), (700, 160)]
LESION_AREA = 400 * 300 - 100 * 100 + 0.5 * 60 * 60


def asap_xml(polygons: list[tuple[str, list]]) -> str:
    parts = []
    for i, (group, vertices) in enumerate(polygons):
        coords = "".join(
            f'<Coordinate Order="{k}" X="{x}" Y="{y}" />' for k, (x, y) in enumerate(vertices)
        )
        parts.append(
            f'<Annotation Name="Annotation {i}" Type="Polygon" PartOfGroup="{group}" '
            f'Color="#F4FA58"><Coordinates>{coords}</Coordinates></Annotation>'
        )
    return (
        f'<?xml version="1.0"?><ASAP_Annotations><Annotations>{"".join(parts)}'
        f"</Annotations><AnnotationGroups /></ASAP_Annotations>"
    )


@pytest.fixture()
def same_lesion(tmp_path: Path) -> dict[str, Path]:
    """The lesion written as ASAP XML, Camelyon16 JSON and two flavours of QuPath GeoJSON."""
    xml = tmp_path / "lesion.xml"
    xml.write_text(asap_xml([("_0", SHELL), ("_2", HOLE), ("_1", TRIANGLE)]))
    js = tmp_path / "lesion.json"
    js.write_text(
        json.dumps(
            {
                "positive": [
                    {"name": "_0", "vertices": SHELL},
                    {"name": "_1", "vertices": TRIANGLE},
                ],
                "negative": [{"name": "_2", "vertices": HOLE}],
            }
        )
    )
    tumor = {"name": "Tumor", "color": [200, 0, 0]}
    with_hole = tmp_path / "hole.geojson"
    with_hole.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"objectType": "annotation", "classification": tumor},
                        "geometry": {
                            "type": "MultiPolygon",
                            "coordinates": [
                                [[*SHELL, SHELL[0]], [*HOLE, HOLE[0]]],
                                [[*TRIANGLE, TRIANGLE[0]]],
                            ],
                        },
                    },
                ],
            }
        )
    )
    separate = tmp_path / "separate.geojson"
    separate.write_text(
        json.dumps(
            [
                {
                    "type": "Feature",
                    "properties": {"classification": tumor},
                    "geometry": {"type": "Polygon", "coordinates": [[*SHELL, SHELL[0]]]},
                },
                {
                    "type": "Feature",
                    "properties": {"classification": "Tumor"},
                    "geometry": {"type": "Polygon", "coordinates": [[*TRIANGLE, TRIANGLE[0]]]},
                },
                {
                    "type": "Feature",
                    "properties": {"classification": {"name": "Exclusion"}},
                    "geometry": {"type": "Polygon", "coordinates": [[*HOLE, HOLE[0]]]},
                },
            ]
        )
    )
    return {"xml": xml, "json": js, "geojson_hole": with_hole, "geojson_separate": separate}


def test_three_formats_give_the_same_lesion(same_lesion: dict[str, Path]) -> None:
    lesions = {name: read_annotations(path).lesions for name, path in same_lesion.items()}
    reference = lesions["xml"]
    assert reference.area == pytest.approx(LESION_AREA)
    assert len(reference.geoms) == 2
    for name, geometry in lesions.items():
        assert geometry.symmetric_difference(reference).area == pytest.approx(0.0, abs=1e-9), name
    # the exclusion is a hole of the big lesion, not a separate shape
    big = max(reference.geoms, key=lambda p: p.area)
    assert len(big.interiors) == 1
    assert not reference.contains(shapely.Point(250, 250))
    assert reference.contains(shapely.Point(150, 150))


def test_group_names_become_canonical_classes(same_lesion: dict[str, Path]) -> None:
    xml = read_annotations(same_lesion["xml"])
    assert set(xml.regions) == {TUMOR, EXCLUSION}
    geojson = read_annotations(same_lesion["geojson_separate"])
    assert set(geojson.regions) == {TUMOR, EXCLUSION}


def test_degenerate_polygon_is_skipped_with_warning_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "positive": [
                    {"name": "_0", "vertices": SHELL},
                    {"name": "_8", "vertices": [[68078, 94925], [68057, 94946]]},
                ],
                "negative": [],
            }
        )
    )
    with pytest.warns(AnnotationWarning, match=r"bad\.json.*'_8'.*fewer than 3"):
        annotations = read_annotations(path)
    assert annotations.lesions.area == pytest.approx(400 * 300)


def test_self_intersecting_ring_is_repaired(tmp_path: Path) -> None:
    bowtie = [(0, 0), (100, 100), (100, 0), (0, 100)]  # two triangles of area 2500 each
    path = tmp_path / "bowtie.xml"
    path.write_text(asap_xml([("Tumor", bowtie)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lesions = read_asap_xml(path).lesions
    assert lesions.is_valid
    assert lesions.area == pytest.approx(5000.0)


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="not found"):
        read_annotations(tmp_path / "missing.xml")
    broken = tmp_path / "broken.xml"
    broken.write_text("<ASAP_Annotations><Annotations>")
    with pytest.raises(AnnotationError, match=r"broken\.xml.*cannot read ASAP XML"):
        read_annotations(broken)
    other = tmp_path / "other.txt"
    other.write_text("x")
    with pytest.raises(AnnotationError, match="unknown annotation format"):
        read_annotations(other)
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "Feature", "geometry": {"type": "Polygon"}, "properties": {}}')
    with pytest.raises(
        AnnotationError,
        match=r"empty\.geojson: feature 0 .*Polygon without "
        r"coordinates",
    ):
        read_annotations(empty)


def test_mask_is_exact_at_pixel_centres() -> None:
    geometry = Polygon(SHELL, [HOLE])
    # 0.25 µm/px slide, mask at 1 µm/px: 4 level-0 px per mask px
    mask = lesion_mask(geometry, slide_width=600, slide_height=480, slide_mpp=0.25, mpp=1.0)
    assert mask.shape == (120, 150)
    rows, cols = np.nonzero(mask)
    # x from 100 to 500 level-0 -> mask columns whose centre (c + 0.5) * 4 is inside: 25..124
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (25, 124, 25, 99)
    assert mask.sum() == 100 * 75 - 25 * 25
    assert not mask[50:75, 50:75].any()


def test_mask_handles_islands_in_holes_and_agrees_with_point_tests() -> None:
    island = Polygon([(220, 220), (280, 220), (280, 280), (220, 280)])
    geometry = MultiPolygon([Polygon(SHELL, [HOLE]), island])
    mask = geometry_mask(geometry, (120, 150), 0.25)
    assert mask.sum() == 100 * 75 - 25 * 25 + 15 * 15
    rng = np.random.default_rng(3)
    blob = shapely.make_valid(Polygon(rng.uniform(0, 100, (40, 2))))
    mask = geometry_mask(blob, (100, 100), 1.0)
    yy, xx = np.mgrid[0:100, 0:100] + 0.5
    np.testing.assert_array_equal(mask, shapely.contains_xy(blob, xx, yy))


def test_tile_fractions_by_hand() -> None:
    geometry = Polygon(SHELL, [HOLE])
    coords = np.array([[100, 100], [200, 200], [450, 100], [150, 150], [600, 600], [450, 350]])
    fractions = tile_fractions(geometry, coords, 100.0)
    np.testing.assert_allclose(fractions, [1.0, 0.0, 0.5, 0.75, 0.0, 0.25], atol=1e-6)
    assert fractions.dtype == np.float32


def test_tile_fractions_match_a_fine_mask() -> None:
    rng = np.random.default_rng(0)
    blob = shapely.make_valid(Polygon(rng.uniform(0, 1000, (25, 2))))
    xs, ys = np.meshgrid(np.arange(0, 1000, 125), np.arange(0, 1000, 125))
    coords = np.column_stack([xs.ravel(), ys.ravel()])
    exact = tile_fractions(blob, coords, 125.0)
    fine = geometry_mask(blob, (1000, 1000), 1.0)
    approx = np.array([fine[y : y + 125, x : x + 125].mean() for x, y in coords])
    np.testing.assert_allclose(exact, approx, atol=0.02)


def test_lesion_fractions_of_a_tiles_file(tmp_path: Path, tiles_attrs, same_lesion) -> None:
    path = write_tiles_file(
        tmp_path / "s1.h5",
        [[100, 100], [200, 200], [450, 100]],
        [1, 1, 1],
        tiles_attrs(tile_size_level0=100.0),
    )
    tiles = read_tiles_file(path)
    fractions = tile_fractions(
        read_annotations(same_lesion["xml"]).lesions,
        tiles.coords,
        float(tiles.attrs["tile_size_level0"]),
    )
    np.testing.assert_allclose(fractions, [1.0, 0.0, 0.5], atol=1e-6)


def test_points_in_tiles() -> None:
    coords = np.array([[0, 0], [100, 0]])
    tiles = points_in_tiles(np.array([[50, 50], [150, 10], [500, 500]]), coords, 100.0)
    np.testing.assert_array_equal(tiles, [0, 1, -1])


def test_asap_round_trip_and_find(tmp_path: Path) -> None:
    geometry = MultiPolygon([Polygon(SHELL, [HOLE]), Polygon(TRIANGLE)])
    path = write_asap_xml(tmp_path / "Tumor_001.xml", geometry)
    back = read_annotations(path)
    assert back.lesions.symmetric_difference(geometry).area == pytest.approx(0.0, abs=1e-6)
    assert find_annotation(tmp_path, "tumor_001") == path
    assert find_annotation(tmp_path, "tumor_002") is None


def test_real_camelyon_annotations(shared_data: Path) -> None:
    ann = shared_data / "annotations"
    c17 = read_annotations(ann / "camelyon17_patient_004_node_4.xml")
    assert len(c17.lesions.geoms) == 3
    with pytest.warns(AnnotationWarning, match=r"Tumor_054\.json.*fewer than 3"):
        c16 = read_annotations(ann / "camelyon16_json" / "train" / "Tumor_054.json")
    assert c16.lesions.is_valid and c16.lesions.area > 0
    dot = read_annotations(ann / "asap_examples" / "asap-dot.xml")
    assert dot.points["None"].shape == (1, 2) and not dot.regions
    pointset = read_annotations(ann / "asap_examples" / "asap-pointset.xml")
    assert pointset.points["None"].shape == (5, 2)
    polygon = read_annotations(ann / "asap_examples" / "asap-polygon.xml")
    assert polygon.regions["None"].area > 0 and polygon.lesions.is_empty
