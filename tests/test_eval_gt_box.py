"""gt-box: boxes around reference components (specks ignored), one batch, union, empty GT."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.errors import InputError
from clipsam.eval.gt_box import GtBoxOracle
from clipsam.models.segmenter import PromptableSegmenter
from clipsam.postprocess.boxes import component_boxes


def two_blobs() -> np.ndarray:
    mask = np.zeros((100, 120), bool)
    mask[10:30, 20:50] = True  # 600 px
    mask[60:90, 70:80] = True  # 300 px
    mask[95, 5] = True  # a 1-px speck
    return mask


def test_the_oracle_boxes_are_exclusive_component_boxes_without_specks(box_segmenter):
    # specks < 12 px (0.001 of the image) get no box; boxes end one past the last pixel
    boxes = component_boxes(two_blobs(), min_fraction=0.001)
    assert boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes, [[20, 10, 50, 30], [70, 60, 80, 90]])
    assert len(component_boxes(two_blobs(), min_fraction=0.0)) == 3
    result = GtBoxOracle(box_segmenter, min_component_fraction=0.001).run(
        np.zeros((100, 120)), two_blobs())
    np.testing.assert_array_equal(result.boxes, boxes)


def test_diagonal_pixels_are_one_component_and_tiny_targets_keep_their_largest():
    mask = np.zeros((50, 50), bool)
    mask[[5, 6, 7], [5, 6, 7]] = True
    mask[30, 30] = True
    np.testing.assert_array_equal(component_boxes(mask, min_fraction=0.5), [[5, 5, 8, 8]])
    assert component_boxes(np.zeros((4, 4), bool), min_fraction=0.5).shape == (0, 4)


def test_run_decodes_all_boxes_in_one_batch_and_unites(box_segmenter):
    assert isinstance(box_segmenter, PromptableSegmenter)
    image = np.random.default_rng(0).integers(0, 255, (100, 120), dtype=np.uint8)
    reference = two_blobs()
    pipeline = GtBoxOracle(box_segmenter, min_component_fraction=0.001)
    result = pipeline.run(image, reference, keep_intermediates=True)
    assert box_segmenter.batches == [2] and box_segmenter.encoded == 1
    assert result.found and result.method == "gt-box" and result.boxes.shape == (2, 4)
    np.testing.assert_array_equal(result.mask, _without_speck(reference))
    assert result.intermediates["box_masks"].shape == (2, 100, 120)
    assert result.scores.shape == (2,) and set(result.timings) == {"encode", "decode"}


def _without_speck(mask: np.ndarray) -> np.ndarray:
    mask = mask.copy()
    mask[95, 5] = False
    return mask


def test_run_reuses_a_given_embedding(box_segmenter):
    image = np.zeros((100, 120), np.float32)
    embedding = box_segmenter.encode(image)
    GtBoxOracle(box_segmenter).run(image, two_blobs(), embedding=embedding)
    assert box_segmenter.encoded == 1


def test_empty_reference_gives_no_box_and_not_found(box_segmenter):
    result = GtBoxOracle(box_segmenter).run(np.zeros((8, 8)), np.zeros((8, 8), bool))
    assert not result.found and not result.mask.any() and result.boxes.shape == (0, 4)
    assert box_segmenter.encoded == 0 and box_segmenter.batches == []


def test_reference_of_another_size_is_refused(box_segmenter):
    with pytest.raises(InputError, match="does not match"):
        GtBoxOracle(box_segmenter).run(np.zeros((8, 8)), np.zeros((8, 9), bool))
