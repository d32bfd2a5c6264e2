"""Size checks made before pixels are decoded, so a huge or empty file fails early and clearly."""

from __future__ import annotations

import math
import os
from pathlib import Path

from clipsam.errors import InputError

DEFAULT_MAX_PIXELS = 1 << 27
"""Largest number of pixels (all slices together) read by default: 134 M, ~0.5 GB as float32."""


def max_pixels_default() -> int:
    """``$CLIPSAM_MAX_PIXELS`` when set, else :data:`DEFAULT_MAX_PIXELS`."""
    value = os.environ.get("CLIPSAM_MAX_PIXELS")
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        return int(value)
    except ValueError:
        raise InputError(f"CLIPSAM_MAX_PIXELS must be an integer, got {value!r}") from None


def check_pixel_count(path: Path, shape: tuple[int, ...], max_pixels: int) -> None:
    """Raise :class:`InputError` if ``shape`` (without colour channels) is empty or too large."""
    count = math.prod(shape)
    if count == 0:
        raise InputError(f"cannot read {path}: the image has zero size {tuple(shape)}")
    if count > max_pixels:
        raise InputError(f"cannot read {path}: {count} pixels {tuple(shape)} exceed the limit of "
                         f"{max_pixels} (raise it with max_pixels or CLIPSAM_MAX_PIXELS)")
