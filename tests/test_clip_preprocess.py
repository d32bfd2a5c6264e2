"""CLIP preprocessing: shortest side to S, centre crop, [0, 1] scaling, CLIP mean/std."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipsam.errors import InputError
from clipsam.models.clip.preprocess import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ClipPreprocess,
    to_rgb_uint8,
)


def test_gray_becomes_three_equal_channels_and_white_maps_to_clip_constants():
    pixels = ClipPreprocess(size=32)(np.full((10, 7), 255, np.uint8))
    assert pixels.shape == (1, 3, 32, 32) and pixels.dtype == torch.float32
    expected = (1 - np.array(OPENAI_CLIP_MEAN)) / np.array(OPENAI_CLIP_STD)
    np.testing.assert_allclose(pixels[0, :, 5, 5].numpy(), expected, rtol=1e-5)


def test_centre_crop_keeps_the_middle_of_a_wide_image():
    image = np.zeros((20, 60, 3), np.uint8)
    image[:, 20:40] = 255  # the middle third is white: after the crop everything is white
    crop = ClipPreprocess(size=20).resize_and_crop(image)
    assert crop.shape == (20, 20, 3)
    assert crop[:, 2:-2].min() > 240
    tall = np.zeros((90, 30), np.uint8)
    tall[:30] = 255  # the top third is cut away entirely
    crop = ClipPreprocess(size=10).resize_and_crop(tall)
    assert crop[2:].max() < 3 and crop.mean() < 10  # only bicubic ringing at the top edge


@pytest.mark.parametrize("image", [
    np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
    np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000,
    np.arange(12, dtype=np.float64).reshape(3, 4, 1) - 5,
])
def test_other_dtypes_are_scaled_to_the_full_byte_range(image):
    rgb = to_rgb_uint8(image)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert rgb.min() == 0 and rgb.max() == 255
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_rgba_drops_alpha_and_bad_inputs_are_input_errors():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 1] = 9
    assert to_rgb_uint8(rgba)[..., 1].max() == 9 and to_rgb_uint8(rgba).shape[2] == 3
    for bad in (np.zeros((0, 5)), np.zeros((2, 2, 2, 2)), np.full((3, 3), np.nan)):
        with pytest.raises(InputError):
            to_rgb_uint8(bad)
    with pytest.raises(InputError):
        ClipPreprocess().batch([])
