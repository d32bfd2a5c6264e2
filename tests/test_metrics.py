"""Metrics against hand-computed cases: two offset squares, spacing, and the empty-mask rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clipsam.errors import InputError
from clipsam.eval.metrics import dice, hd95, iou, nsd, score_mask, slice_detection


def squares(shift: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A 10x10 reference square and the same square moved ``shift`` columns to the right."""
    reference = np.zeros((40, 40), bool)
    reference[10:20, 10:20] = True
    prediction = np.roll(reference, shift, axis=1)
    return prediction, reference


def test_overlap_of_offset_squares():
    prediction, reference = squares(3)
    # overlap 10 x 7 = 70 px; sizes 100 + 100; union 130
    assert dice(prediction, reference) == pytest.approx(140 / 200)
    assert iou(prediction, reference) == pytest.approx(70 / 130)
    assert dice(reference, reference) == pytest.approx(1.0)


def test_hd95_of_offset_squares_in_pixels_and_mm():
    prediction, reference = squares(3)
    # every boundary pixel lies within 3 px of the other boundary; the shifted sides (a quarter
    # of each boundary) lie exactly 3 px away, so the 95th percentile is 3 px
    assert hd95(prediction, reference) == pytest.approx(3.0)
    assert hd95(prediction, reference, spacing=(1.0, 0.5)) == pytest.approx(1.5)
    assert hd95(prediction, reference, spacing=(0.5, 2.0)) == pytest.approx(6.0)


def test_nsd_of_offset_squares():
    prediction, reference = squares(3)
    # each 36-px boundary has 14 px farther than 2 px from the other boundary: the 10 px of the
    # shifted side and 4 px in the middle of the inner side (3 px from both neighbours' edges)
    assert nsd(prediction, reference, tolerance_mm=2.0) == pytest.approx(44 / 72)
    assert nsd(prediction, reference, tolerance_mm=3.0) == pytest.approx(1.0)
    # 0.5 mm columns: the 3-px shift is 1.5 mm, inside a 2 mm tolerance
    assert nsd(prediction, reference, spacing=(1.0, 0.5), tolerance_mm=2.0) == pytest.approx(1.0)


def test_empty_masks_follow_the_documented_rules():
    empty = np.zeros((8, 8), bool)
    full = np.zeros((8, 8), bool)
    full[2:5, 2:5] = True
    both = score_mask(empty, empty)
    assert both.dice == 1.0 and both.iou == 1.0
    assert math.isnan(both.hd95) and math.isnan(both.nsd)
    for prediction, reference in ((full, empty), (empty, full)):
        one = score_mask(prediction, reference)
        assert one.dice == 0.0 and one.iou == 0.0
        assert math.isnan(one.hd95) and math.isnan(one.nsd)


def test_bad_shapes_and_spacing_are_input_errors():
    with pytest.raises(InputError):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))
    prediction, reference = squares()
    with pytest.raises(InputError):
        hd95(prediction, reference, spacing=(0.0, 1.0))


def test_slice_detection_counts_the_slices_holding_each_mask():
    reference = np.zeros((5, 4, 4), bool)
    reference[1:4, 1, 1] = True  # slices 1, 2, 3
    prediction = np.zeros_like(reference)
    prediction[[0, 2, 3], 2, 2] = True  # slices 0, 2, 3: two hits, one false slice
    found = slice_detection(prediction, reference)
    assert (found.ref, found.pred, found.hit) == (3, 3, 2)
    assert found.precision == found.recall == 2 / 3
    empty = slice_detection(np.zeros_like(reference), reference)
    assert empty.recall == 0.0 and np.isnan(empty.precision)
    with pytest.raises(InputError, match="slice detection needs"):
        slice_detection(reference[0], reference[0])
