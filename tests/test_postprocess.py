"""Thresholds, connected components and boxes on synthetic maps with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from clipsam.errors import InputError
from clipsam.postprocess.boxes import (
    box_areas,
    box_iou,
    clip_boxes,
    component_boxes,
    expand_boxes,
    label_boxes,
    mask_to_box,
    masks_to_boxes,
)
from clipsam.postprocess.components import (
    drop_specks,
    fill_holes,
    keep_largest,
    label_components,
)
from clipsam.postprocess.threshold import (
    fixed_threshold,
    kmeans_centres,
    kmeans_threshold,
    otsu_level,
    otsu_threshold,
    rescale_unit,
)


def two_level_map(seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.zeros((64, 80), bool)
    truth[10:30, 20:60] = True
    values = np.where(truth, 0.8, 0.2) + rng.normal(0, noise, truth.shape)
    return values, truth


# --- thresholds ------------------------------------------------------------------------------

def test_otsu_recovers_two_level_region_and_matches_reference_level():
    values, truth = two_level_map()
    mask = otsu_threshold(values * 40 - 7)  # any real range
    assert np.array_equal(mask, truth)
    reference = values > threshold_otsu(values, nbins=256)
    assert np.mean(otsu_threshold(values) != reference) < 0.001
    assert 0.3 < otsu_level(values) < 0.7


def test_kmeans_centres_are_cluster_means_and_deterministic():
    values, truth = two_level_map(noise=0.02)
    low, high = kmeans_centres(values)
    assert low == pytest.approx(values[~truth].mean(), abs=1e-9)
    assert high == pytest.approx(values[truth].mean(), abs=1e-9)
    assert np.array_equal(kmeans_threshold(values), truth)
    assert kmeans_centres(values, seed=3) == kmeans_centres(values, seed=3)


def test_fixed_threshold_on_raw_and_rescaled_values():
    values = np.array([[0.0, 2.0], [6.0, 10.0]])
    assert fixed_threshold(values, 0.5).tolist() == [[False, False], [True, True]]
    assert fixed_threshold(values, 1.0, rescale=False).tolist() == [[False, True], [True, True]]
    assert rescale_unit(values).max() == 1.0


@pytest.mark.parametrize("binarise", [otsu_threshold, kmeans_threshold, fixed_threshold])
def test_constant_and_non_finite_maps(binarise):
    assert not binarise(np.full((5, 5), 3.0)).any()
    values, truth = two_level_map()
    values[0, 0] = np.nan
    values[1, 1] = np.inf
    mask = binarise(values)
    assert not mask[0, 0]
    assert mask.shape == truth.shape
    with pytest.raises(InputError):
        binarise(np.zeros((2, 2, 2)))


# --- components ------------------------------------------------------------------------------

def three_squares() -> np.ndarray:
    mask = np.zeros((50, 50), bool)
    mask[2:12, 2:12] = True  # 100
    mask[20:26, 20:26] = True  # 36
    mask[40:42, 40:42] = True  # 4
    return mask


def test_label_and_keep_largest():
    mask = three_squares()
    _, areas = label_components(mask)
    assert sorted(areas.tolist()) == [4, 36, 100]
    assert keep_largest(mask).sum() == 100
    assert keep_largest(mask, 2).sum() == 136
    assert np.array_equal(keep_largest(mask, 5), mask)
    assert not keep_largest(np.zeros((4, 4), bool)).any()
    with pytest.raises(InputError):
        keep_largest(mask, 0)


def test_connectivity_of_diagonal_neighbours():
    mask = np.zeros((6, 6), bool)
    mask[1:3, 1:3] = True
    mask[3:5, 3:5] = True  # touches the first square only at a corner
    assert label_components(mask, 8)[1].tolist() == [8]
    assert label_components(mask, 4)[1].tolist() == [4, 4]


def test_drop_specks_relative_to_largest_and_to_image():
    mask = three_squares()
    assert drop_specks(mask, 0.3).sum() == 136  # 36 >= 30, 4 < 30
    assert drop_specks(mask, 0.02, relative_to="image").sum() == 100  # 50 px needed
    assert drop_specks(mask, 0.01, relative_to="image").sum() == 136  # 25 px needed
    assert drop_specks(mask, 0.0).sum() == 140


def test_fill_holes_all_and_only_small():
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    mask[10:25, 10:25] = False  # big hole: 225 px
    mask[29:31, 29:31] = False  # small hole: 4 px
    assert fill_holes(mask).sum() == 900
    partly = fill_holes(mask, max_fraction=10 / 1600)
    assert partly[29:31, 29:31].all() and not partly[10:25, 10:25].any()
    open_ring = mask.copy()
    open_ring[15, 5:10] = False  # a channel from the big hole to the outside
    assert fill_holes(open_ring)[10:25, 10:25].sum() == 0


# --- boxes -----------------------------------------------------------------------------------

def test_mask_to_box_is_exclusive_at_the_far_corner():
    mask = np.zeros((30, 40), bool)
    mask[5:12, 7:20] = True
    box = mask_to_box(mask)
    assert box.tolist() == [7, 5, 20, 12]
    x1, y1, x2, y2 = box.astype(int)
    assert mask[y1:y2, x1:x2].all() and mask[y1:y2, x1:x2].sum() == mask.sum()
    assert box_areas(box).tolist() == [mask.sum()]
    assert mask_to_box(np.zeros((3, 3), bool)) is None


def test_masks_to_boxes_agrees_with_single_mask_boxes():
    rng = np.random.default_rng(1)
    masks = rng.random((20, 17, 23)) > 0.97
    masks[3] = False
    boxes = masks_to_boxes(masks)
    for mask, box in zip(masks, boxes, strict=True):
        single = mask_to_box(mask)
        assert box.tolist() == ([0, 0, 0, 0] if single is None else single.tolist())


def test_component_boxes_largest_first():
    mask = three_squares()
    assert component_boxes(mask).tolist() == [[2, 2, 12, 12], [20, 20, 26, 26], [40, 40, 42, 42]]
    assert mask_to_box(mask).tolist() == [2, 2, 42, 42]
    assert component_boxes(np.zeros((5, 5), bool)).shape == (0, 4)


def test_speck_threshold_and_label_boxes():
    mask = three_squares()  # 100, 36 and 4 pixels
    fraction = 10 / mask.size
    assert component_boxes(mask, min_fraction=fraction).tolist() == [[2, 2, 12, 12],
                                                                      [20, 20, 26, 26]]
    assert component_boxes(mask, min_fraction=1.0).tolist() == [[2, 2, 12, 12]]  # all specks
    labels = np.zeros((6, 8), int)
    labels[1:3, 2:5] = 1
    labels[4, 7] = 3  # label 2 has no pixel
    assert label_boxes(labels).tolist() == [[2, 1, 5, 3], [0, 0, 0, 0], [7, 4, 8, 5]]


def test_expand_and_clip_boxes():
    boxes = np.array([[10, 10, 20, 30], [0, 0, 5, 5]], np.float32)
    grown = expand_boxes(boxes, (40, 25), pixels=2, fraction=0.1)
    assert grown[0].tolist() == pytest.approx([7, 6, 23, 34])
    assert grown[1].tolist() == pytest.approx([0, 0, 7.5, 7.5])
    assert expand_boxes(boxes[:1], (40, 25), pixels=20)[0].tolist() == [0, 0, 25, 40]
    assert clip_boxes([[-3, 4, 50, 60]], (40, 25)).tolist() == [[0, 4, 25, 40]]


def test_box_iou_matches_pixel_counts():
    rng = np.random.default_rng(2)
    corners = rng.integers(0, 30, size=(12, 2, 2))
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1) + 1], axis=1)
    rasters = np.zeros((12, 31, 31), bool)
    for raster, (x1, y1, x2, y2) in zip(rasters, boxes, strict=True):
        raster[y1:y2, x1:x2] = True
    inter = (rasters[:, None] & rasters[None]).sum(axis=(2, 3))
    union = (rasters[:, None] | rasters[None]).sum(axis=(2, 3))
    assert np.allclose(box_iou(boxes, boxes), inter / union)
    assert box_iou(np.zeros((1, 4)), np.zeros((2, 4))).tolist() == [[0.0, 0.0]]
