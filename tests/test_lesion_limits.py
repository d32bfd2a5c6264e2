"""What limits box-anchored decoding: the share of the target inside the boxes, the ceiling,
the IoU prediction's rank agreement, and the figure of the worst images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipsam.errors import InputError
from clipsam.eval.lesion_limits import limit_row, spearman, summarise_limits
from clipsam.io.overlay import case_picture, write_sheet_png
from clipsam.postprocess.boxes import boxes_to_mask, mask_to_box


def test_boxes_to_mask_covers_the_box_convention():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    np.testing.assert_array_equal(boxes_to_mask(mask_to_box(mask)[None], mask.shape), mask)
    both = boxes_to_mask(np.array([[0, 0, 2, 2], [10, 8, 20, 20]], np.float32), (10, 12))
    assert both.sum() == 4 + 2 * 2 and both[9, 11] and not both[5, 5]
    assert not boxes_to_mask(np.zeros((0, 4), np.float32), (4, 4)).any()


def test_a_limit_row_measures_inside_ceiling_and_prediction():
    reference = np.zeros((20, 20), bool)
    reference[5:15, 5:15] = True  # 100 pixels
    box = np.array([[5, 5, 15, 10]], np.float32)  # covers the top half of the target
    mask = boxes_to_mask(box, reference.shape)
    row = limit_row("s", "a", mask, box, np.array([0.9]), reference, True)
    assert row.inside == pytest.approx(0.5) and row.n_boxes == 1
    assert row.ceiling == pytest.approx(2 * 50 / 150) == pytest.approx(row.dice)
    assert row.iou == pytest.approx(0.5) and row.predicted_iou == pytest.approx(0.9)
    missed = limit_row("s", "b", np.zeros_like(reference), np.zeros((0, 4)), np.zeros(0),
                       reference, False)
    assert (missed.inside, missed.ceiling, missed.predicted_iou) == (0.0, 0.0, None)
    with pytest.raises(ValueError, match="empty"):
        limit_row("s", "c", mask, box, np.array([0.9]), np.zeros_like(reference), True)


def test_spearman_matches_the_rank_definition_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks with ties averaged: x -> 1, 2.5, 2.5, 4; y -> 1, 2, 3, 4
    x_ranks, y_ranks = np.array([1, 2.5, 2.5, 4]), np.arange(1, 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(
        np.corrcoef(x_ranks, y_ranks)[0, 1])
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1, 2], [1, 2]) is None


def test_the_summary_counts_poor_images_by_cause():
    reference = np.zeros((20, 20), bool)
    reference[5:15, 5:15] = True
    full = np.array([[5, 5, 15, 15]], np.float32)
    corner = np.array([[0, 0, 6, 6]], np.float32)
    rows = [limit_row("s", "good", reference, full, np.array([0.9]), reference, True),
            limit_row("s", "outside", boxes_to_mask(corner, (20, 20)), corner,
                      np.array([0.8]), reference, True),
            limit_row("s", "missed", np.zeros_like(reference), np.zeros((0, 4)), np.zeros(0),
                      reference, False)]
    entry = summarise_limits(rows)["s"]
    assert (entry["n"], entry["below"], entry["below_not_found"],
            entry["below_mostly_outside"], entry["n_rated"]) == (3, 2, 1, 1, 2)
    assert entry["iou_overconfidence"] == pytest.approx(
        ((0.9 - 1.0) + (0.8 - rows[1].iou)) / 2, abs=1e-4)
    assert entry["iou_spearman"] is None  # two rated images cannot be ranked


def test_the_worst_images_sheet_draws_each_outline(tmp_path):
    pixels = np.full((40, 60), 50, np.uint8)
    reference = np.zeros((40, 60), bool)
    reference[10:30, 10:30] = True
    mask = np.zeros_like(reference)
    mask[12:28, 30:50] = True
    box = np.array([[8, 8, 55, 35]], np.float32)  # the prompt around the answer
    picture = case_picture(pixels, mask, reference, box)
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert {(255, 220, 0), (0, 255, 0), (255, 64, 64)} <= colours
    path = write_sheet_png(tmp_path / "worst.png", [picture, picture], ["a", "b"], columns=2)
    assert Image.open(path).size == (2 * 60, 40 + 14)
    with pytest.raises(InputError, match="captions"):
        write_sheet_png(tmp_path / "x.png", [picture], [], columns=2)
