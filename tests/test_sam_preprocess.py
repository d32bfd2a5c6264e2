"""Model-input preparation and the way back to the original image frame."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.models.sam.preprocess import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    prepare_image,
    prompt_points,
    resized_size,
)
from clipsam.models.segmenter import Geometry


@pytest.mark.parametrize(("size", "expected"), [((540, 800), (173, 256)), ((512, 512), (256, 256)),
                                                ((1000, 10), (256, 3)), ((3, 2), (256, 171))])
def test_longest_side_becomes_input_size(size, expected) -> None:
    assert resized_size(size, 256) == expected


def test_minmax_input_is_unit_range_and_padded_with_zeros() -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(-1000, 3000, size=(100, 200)).astype(np.float32)  # e.g. CT values
    model_input, geometry = prepare_image(image, 256, "minmax")
    assert model_input.shape == (1, 3, 256, 256) and model_input.dtype == np.float32
    assert geometry == Geometry((100, 200), (128, 256), 256)
    content = model_input[..., :128, :]
    assert content.min() == pytest.approx(0.0) and content.max() == pytest.approx(1.0)
    assert not model_input[..., 128:, :].any()
    np.testing.assert_array_equal(model_input[0, 0], model_input[0, 2])  # gray -> 3 channels


def test_constant_image_gives_zeros_not_nan() -> None:
    model_input, _ = prepare_image(np.full((30, 40), 7, np.uint16), 256, "minmax")
    assert np.isfinite(model_input).all() and not model_input.any()


def test_sam_pixel_normalisation_keeps_uint8_values() -> None:
    image = np.zeros((256, 256, 3), np.uint8)
    image[..., 0] = 200
    model_input, _ = prepare_image(image, 256, "sam_pixel")
    expected = (200 - SAM_PIXEL_MEAN[0]) / SAM_PIXEL_STD[0]
    np.testing.assert_allclose(model_input[0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(model_input[0, 1], -SAM_PIXEL_MEAN[1] / SAM_PIXEL_STD[1],
                               rtol=1e-5)


def test_rgba_drops_alpha() -> None:
    image = np.zeros((10, 10, 4), np.uint8)
    image[..., 3] = 255
    image[2:5, 2:5, :3] = 100
    with_alpha, _ = prepare_image(image, 64, "minmax")
    without, _ = prepare_image(image[..., :3], 64, "minmax")
    np.testing.assert_array_equal(with_alpha, without)


def test_logits_map_back_by_cropping_padding_then_resizing() -> None:
    """Positive logits in the left half of the resized content land in the left half of a
    wide original image, with the same relative extent (no squashing into the padding)."""
    geometry = Geometry((300, 900), (85, 256), 256)
    low_res = np.full((1, 64, 64), -10.0, np.float32)  # a SAM-style 4x smaller grid
    low_res[0, :21, :32] = 10.0  # rows 0-84 / 4 and columns 0-127 / 4 of the input frame
    mask = geometry.grid_to_original(low_res)[0] > 0
    assert mask.shape == (300, 900)
    columns = np.nonzero(mask.any(axis=0))[0]
    rows = np.nonzero(mask.any(axis=1))[0]
    assert columns.min() == 0 and abs(columns.max() - 449) <= 4
    assert rows.min() == 0 and rows.max() >= 290


def test_prompts_become_labelled_points_in_the_input_frame() -> None:
    geometry = Geometry((100, 200), (128, 256), 256)
    coords, labels = prompt_points(geometry, np.array([[10, 20, 100, 50]]), None, None)
    np.testing.assert_allclose(coords, [[[12.8, 25.6], [128.0, 64.0]]], rtol=1e-6)
    np.testing.assert_array_equal(labels, [[2, 3]])
    coords, labels = prompt_points(geometry, None, np.array([[[50, 50]]]), np.array([[1]]))
    np.testing.assert_array_equal(labels, [[1, -1]])  # a padding point when there is no box
    assert coords.shape == (1, 2, 2)
    coords, labels = prompt_points(geometry, np.array([[0, 0, 10, 10]]), np.array([[[5, 5]]]),
                                   np.array([[0]]))
    np.testing.assert_array_equal(labels, [[0, 2, 3]])
