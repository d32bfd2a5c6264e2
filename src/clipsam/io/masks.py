"""Binary masks on disk: 8-bit 0/255 PNG, and NIfTI in the space of the input image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from clipsam.errors import InputError
from clipsam.io.atomic import write_atomic
from clipsam.io.read import read_image


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """(H, W) bool mask from an image file: any non-zero pixel (any channel) is target."""
    image = read_image(path)
    if image.is_volume:
        raise InputError(f"cannot use {path} as a mask: it is a volume, not a 2-D image")
    pixels = np.asarray(image.pixels)
    return (pixels != 0).any(axis=-1) if pixels.ndim == 3 else pixels != 0


def write_mask_png(path: str | os.PathLike[str], mask: np.ndarray) -> Path:
    """Write an (H, W) mask as an 8-bit PNG: 0 background, 255 target."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise InputError(f"cannot write {path}: a PNG mask must be a non-empty (H, W) array, "
                         f"got shape {mask.shape}")
    pixels = np.where(mask.astype(bool), 255, 0).astype(np.uint8)
    return write_atomic(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))
