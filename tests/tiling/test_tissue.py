"""Tissue detection on low-resolution images: thresholds, area filters, faint tissue, pen marks."""

from __future__ import annotations

import numpy as np
import pytest

from tiling.params import TissueParams
from tiling.tissue import background_masks, detect_tissue, tissue_params_of

GLASS = (243, 243, 243)
HE_PINK = (200, 110, 170)
FAINT_PINK = (236, 222, 232)  # saturation ~15: pale tissue
GREEN_INK = (40, 150, 70)


def canvas(h: int = 200, w: int = 300) -> np.ndarray:
    return np.tile(np.array(GLASS, np.uint8), (h, w, 1))


# the images below are at 8 µm/px: slide_mpp 0.25, downsample 32
MPP, DS = 0.25, 32.0


def test_dense_tissue_with_holes_and_specks():
    image = canvas()
    image[50:150, 50:150] = HE_PINK
    image[90:92, 90:92] = GLASS  # 4 px hole = 256 µm² -> filled
    image[110:130, 110:130] = GLASS  # 400 px = 25 600 µm² -> stays a hole
    image[20:22, 250:252] = HE_PINK  # 4 px speck = 256 µm² -> dropped
    mask = detect_tissue(image, DS, MPP, TissueParams(median_blur_um=0, closing_um=0)).mask
    assert mask[91, 91] and not mask[120, 120] and not mask[21, 251]
    assert mask.sum() == 100 * 100 - 400


def test_faint_tissue_needs_fixed_threshold():
    image = canvas()
    image[40:160, 20:100] = HE_PINK
    image[40:160, 180:280] = FAINT_PINK
    otsu = detect_tissue(image, DS, MPP, TissueParams(tissue_method="otsu"))
    assert otsu.mask[100, 60] and not otsu.mask[100, 230]
    fixed = detect_tissue(
        image, DS, MPP, TissueParams(tissue_method="fixed", saturation_threshold=8)
    )
    assert fixed.mask[100, 60] and fixed.mask[100, 230]
    assert fixed.threshold == 8 and fixed.method == "hsv-saturation-fixed"


def test_pen_filter_removes_ink_but_not_stain():
    image = canvas()
    image[40:160, 20:120] = HE_PINK
    image[20:180, 200:215] = GREEN_INK  # a pen line on the glass
    plain = detect_tissue(image, DS, MPP, TissueParams())
    assert plain.mask[100, 207]  # the known failure mode: ink looks like tissue
    filtered = detect_tissue(image, DS, MPP, TissueParams(pen_filter=True))
    assert not filtered.mask[:, 190:230].any()
    assert filtered.mask[100, 60]


def test_black_pixels_are_not_tissue():
    image = canvas()
    image[40:160, 20:120] = HE_PINK
    image[40:160, 200:280] = (10, 5, 25)  # black with noisy saturation
    mask = detect_tissue(image, DS, MPP, TissueParams()).mask
    assert mask[100, 60] and not mask[100, 240]
    white, black = background_masks(image, TissueParams())
    assert black[100, 240] and not black[100, 60] and white[5, 5] and not white[100, 60]


def test_empty_glass_gives_no_tissue():
    rng = np.random.default_rng(0)
    image = np.clip(canvas().astype(int) + rng.integers(-4, 5, (200, 300, 3)), 0, 255)
    mask = detect_tissue(image.astype(np.uint8), DS, MPP, TissueParams())
    assert not mask.mask.any() and mask.threshold >= TissueParams().min_saturation


def test_sizes_are_physical():
    """The same tissue at two resolutions gives the same mask area in µm² after filtering."""
    image = canvas(400, 600)
    image[100:300, 100:300] = HE_PINK
    image[150:154, 150:154] = GLASS  # 16 px at 4 µm/px = 256 µm²: filled
    fine = detect_tissue(image, 16.0, MPP, TissueParams())
    coarse = detect_tissue(image[::2, ::2].copy(), DS, MPP, TissueParams())
    fine_um2 = fine.mask.sum() * (16 * MPP) ** 2
    coarse_um2 = coarse.mask.sum() * (DS * MPP) ** 2
    assert fine_um2 == pytest.approx(coarse_um2, rel=0.02)


def test_params_validated_and_recorded():
    with pytest.raises(ValueError, match="tissue_method"):
        TissueParams(tissue_method="magic")
    with pytest.raises(ValueError, match="max_white_fraction"):
        TissueParams(max_white_fraction=2)
    recorded = tissue_params_of(TissueParams())
    assert recorded["pen_hue_deg"] == [60.0, 200.0] and recorded["tissue_method"] == "auto"
    with pytest.raises(ValueError, match="min_saturation 30 exceeds max_saturation"):
        TissueParams(min_saturation=30)
    assert TissueParams(min_saturation=30, tissue_method="otsu").min_saturation == 30


def test_island_in_a_large_hole_is_its_own_piece():
    image = canvas(300, 300)
    image[20:280, 20:280] = HE_PINK
    image[60:240, 60:240] = GLASS  # a large hole (32 400 px)
    image[140:160, 140:160] = HE_PINK  # a 400 px island in it: 25 600 µm², kept
    image[100:102, 100:102] = HE_PINK  # a 4 px island: dropped
    mask = detect_tissue(image, DS, MPP, TissueParams(median_blur_um=0, closing_um=0)).mask
    assert mask[150, 150] and not mask[101, 101] and not mask[80, 80]
    assert mask.sum() == 260 * 260 - 180 * 180 + 400


PALE_STROMA = (236, 212, 228)  # saturation 26: pale eosin, as in the UCSB fields


def test_auto_keeps_pale_tissue_on_a_field_that_is_mostly_tissue():
    """Otsu splits pale from dense tissue when there is little glass; "auto" caps it."""
    image = canvas()
    image[:, :150] = HE_PINK
    image[:, 150:290] = PALE_STROMA  # and 10 columns of glass
    otsu = detect_tissue(image, DS, MPP, TissueParams(tissue_method="otsu"))
    assert not otsu.mask[100, 200]  # CLAM's rule splits dense from pale: the stroma is lost
    auto = detect_tissue(image, DS, MPP, TissueParams())
    assert auto.threshold == TissueParams().max_saturation
    assert auto.mask[:, :285].all() and not auto.mask[:, 296:].any()


def test_auto_follows_tinted_glass():
    """Glass tinted to saturation ~20 stays glass: the floor rises above the glass's level."""
    image = np.tile(np.array((242, 236, 224), np.uint8), (200, 300, 1))  # yellowed, S ~19
    image[40:160, 20:120] = HE_PINK
    mask = detect_tissue(image, DS, MPP, TissueParams())
    assert mask.threshold > 19 + 5
    assert mask.mask[100, 60] and not mask.mask[100, 250]


def test_size_filters_are_relative_to_a_small_field():
    """20 000 µm² is a quarter of a 275 µm field: there the 1 % relative limit applies."""
    image = canvas(50, 50)  # 50 px at 5.5 µm/px: a 275 µm field
    image[5:12, 5:12] = HE_PINK  # 49 px = 1482 µm²: a real piece of tissue on this field
    image[30:31, 30:31] = HE_PINK  # 1 px = 30 µm²: a speck, under 1 % of the field
    params = TissueParams(median_blur_um=0, closing_um=0)
    mask = detect_tissue(image, 11.0, 0.5, params).mask
    assert mask[8, 8] and not mask[30, 30]
    absolute = detect_tissue(
        image, 11.0, 0.5, TissueParams(median_blur_um=0, closing_um=0, size_filter_fraction=1.0)
    ).mask
    assert not absolute.any()
