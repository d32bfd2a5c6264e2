"""CLIP-style image preprocessing in numpy/PIL: any image or crop -> one normalised tensor.

Follows the transform the CLIP family was trained with (Radford et al. 2021): resize the
shortest side to the input size with bicubic resampling, centre-crop a square, scale to [0, 1]
and standardise each channel with the model's mean and std.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from clipsam.errors import InputError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 view of a gray, gray+channel, RGB or RGBA array of any numeric dtype.

    uint8 is kept as is; other integer or float images are min-max scaled to 0..255, except
    floats already in [0, 1], which are multiplied by 255.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[..., :3] if array.shape[2] != 1 else array[..., 0]
    if array.ndim not in (2, 3) or array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"expected an (H, W) or (H, W, 3) image, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise InputError("image contains NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if np.issubdtype(array.dtype, np.floating) and low >= 0.0 and high <= 1.0:
            values = values * 255.0
        elif high > low:
            values = (values - low) * (255.0 / (high - low))
        else:
            values = np.zeros_like(values)
        array = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array)


@dataclass(frozen=True)
class ClipPreprocess:
    """Resize-shortest-side (bicubic), centre crop ``size`` x ``size``, standardise."""

    size: int = 224
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD

    def resize_and_crop(self, image: np.ndarray) -> np.ndarray:
        """(size, size, 3) uint8 centre crop of the resized image."""
        rgb = Image.fromarray(to_rgb_uint8(image))
        width, height = rgb.size
        short, long = (width, height) if width <= height else (height, width)
        new_long = max(self.size, int(self.size * long / short))
        new_size = (self.size, new_long) if width <= height else (new_long, self.size)
        resized = rgb.resize(new_size, Image.Resampling.BICUBIC)
        left = round((resized.size[0] - self.size) / 2.0)
        top = round((resized.size[1] - self.size) / 2.0)
        cropped = resized.crop((left, top, left + self.size, top + self.size))
        return np.asarray(cropped)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """(1, 3, size, size) float32 tensor for one image."""
        return self.batch([image])

    def batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, 3, size, size) float32 tensor for several images of any sizes."""
        if len(images) == 0:
            raise InputError("no images given")
        stacked = np.stack([self.resize_and_crop(image) for image in images]).astype(np.float32)
        stacked = (stacked / 255.0 - np.asarray(self.mean, np.float32)) / np.asarray(
            self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(stacked.transpose(0, 3, 1, 2)))
