"""The one rule from a saliency map's coarse mask to targets and box prompts."""

import numpy as np
import pytest

from clipsam.config import MapBoxRule
from clipsam.errors import InputError
from clipsam.postprocess.boxes import mask_to_box
from clipsam.postprocess.map_boxes import map_boxes


def _blobs():
    """A 10x10, an 8x8 and a 2x2 component of a uniform map: masses 100, 64 and 4."""
    coarse = np.zeros((40, 60), bool)
    coarse[5:15, 3:13] = True
    coarse[20:28, 40:48] = True
    coarse[35:37, 20:22] = True
    return coarse, coarse.astype(np.float32)


THIRTY = MapBoxRule(keep_fraction=0.3)


def test_the_default_rule_keeps_every_component_heaviest_first():
    coarse, saliency = _blobs()
    mask, boxes = map_boxes(coarse, saliency)
    np.testing.assert_array_equal(boxes, [[3, 5, 13, 15], [40, 20, 48, 28], [20, 35, 22, 37]])
    np.testing.assert_array_equal(mask, coarse)


def test_instances_holding_a_share_of_the_mass_are_kept_and_a_weak_speck_dropped():
    coarse, saliency = _blobs()
    mask, boxes = map_boxes(coarse, saliency, THIRTY)
    # heaviest first, exclusive far corner: mask[5:15, 3:13] is the box (3, 5, 13, 15)
    np.testing.assert_array_equal(boxes, [[3, 5, 13, 15], [40, 20, 48, 28]])
    assert boxes.dtype == np.float32
    expected = coarse.copy()
    expected[35:37, 20:22] = False
    np.testing.assert_array_equal(mask, expected)
    # the same speck is kept when it holds enough of the mass (a hot speck)
    hot = saliency.copy()
    hot[35:37, 20:22] = 10.0
    _, boxes = map_boxes(coarse, hot, THIRTY)
    assert [20, 35, 22, 37] in boxes.tolist()


def test_mass_not_area_decides_the_order_and_keep_fraction_the_cut():
    coarse, saliency = _blobs()
    saliency[20:28, 40:48] = 3.0  # the smaller square now holds 192 > 100
    _, boxes = map_boxes(coarse, saliency)
    np.testing.assert_array_equal(boxes[0], [40, 20, 48, 28])
    _, only = map_boxes(coarse, saliency, MapBoxRule(keep_fraction=0.6))
    np.testing.assert_array_equal(only, [[40, 20, 48, 28]])
    _, capped = map_boxes(coarse, coarse.astype(np.float32), MapBoxRule(keep_fraction=0.0,
                                                                        max_boxes=2))
    assert len(capped) == 2


def test_peak_fraction_tightens_a_strong_core_inside_a_weak_region():
    coarse = np.zeros((64, 64), bool)
    coarse[4:44, 8:56] = True  # the weakly salient sac
    saliency = np.where(coarse, 0.3, 0.0).astype(np.float32)
    saliency[20:30, 25:37] = 0.9  # the strongly salient head
    mask, loose = map_boxes(coarse, saliency)
    np.testing.assert_array_equal(loose, [[8, 4, 56, 44]])
    np.testing.assert_array_equal(mask, coarse)
    mask, tight = map_boxes(coarse, saliency, MapBoxRule(peak_fraction=0.8))
    np.testing.assert_array_equal(tight, [[25, 20, 37, 30]])
    np.testing.assert_array_equal(mask_to_box(mask), tight[0])
    assert mask.sum() == 10 * 12


def test_peak_tightening_keeps_the_heaviest_core_part():
    coarse = np.zeros((30, 30), bool)
    coarse[2:28, 2:28] = True
    saliency = np.where(coarse, 0.2, 0.0).astype(np.float32)
    saliency[5:8, 5:8] = 1.0  # small, hot
    saliency[15:25, 15:25] = 0.9  # large, nearly as hot: more mass
    _, boxes = map_boxes(coarse, saliency, MapBoxRule(peak_fraction=0.85))
    np.testing.assert_array_equal(boxes, [[15, 15, 25, 25]])


def test_an_empty_coarse_mask_gives_no_target():
    mask, boxes = map_boxes(np.zeros((8, 9), bool), np.random.default_rng(0).random((8, 9)))
    assert boxes.shape == (0, 4) and boxes.dtype == np.float32
    assert mask.shape == (8, 9) and not mask.any()


def test_bad_inputs_are_refused():
    with pytest.raises(InputError):
        map_boxes(np.zeros((4, 4), bool), np.zeros((4, 5)))
    with pytest.raises(ValueError):
        MapBoxRule(keep_fraction=1.5)
    with pytest.raises(ValueError):
        MapBoxRule(peak_fraction=1.0)
    with pytest.raises(ValueError):
        MapBoxRule(max_boxes=0)
