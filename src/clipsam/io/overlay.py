"""Pictures for people: the image in 8-bit with the mask outline and prompt boxes drawn on it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from clipsam.errors import InputError
from clipsam.io.atomic import write_atomic
from clipsam.io.image import MedicalImage, segmenter_input

MASK_COLOUR = (0, 255, 0)
BOX_COLOUR = (255, 64, 64)


def to_display(pixels: np.ndarray, low_percentile: float = 0.5,
               high_percentile: float = 99.5) -> np.ndarray:
    """(H, W, 3) uint8 from any numeric range: clip to the given percentiles, scale to 0..255.

    uint8 input is shown unchanged; other ranges are stretched (a constant image turns black).
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        values = pixels.astype(np.float32)
        finite = values[np.isfinite(values)]
        low, high = (np.percentile(finite, [low_percentile, high_percentile])
                     if finite.size else (0.0, 0.0))
        scaled = (np.clip(np.nan_to_num(values, nan=low), low, high) - low) / max(high - low, 1e-12)
        pixels = np.round(scaled * 255).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


def write_overlay_png(
    path: str | os.PathLike[str],
    image: MedicalImage | np.ndarray,
    mask: np.ndarray,
    boxes: np.ndarray | None = None,
) -> Path:
    """Write the image with ``mask``'s outline (green) and xyxy ``boxes`` (red) as an RGB PNG."""
    pixels = segmenter_input(image) if isinstance(image, MedicalImage) else np.asarray(image)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != pixels.shape[:2]:
        raise InputError(f"cannot write {path}: mask shape {mask.shape} does not match the "
                         f"image shape {pixels.shape[:2]}")
    canvas = to_display(pixels).copy()
    thickness = max(1, round(min(mask.shape) / 256))
    outline = mask & ~ndimage.binary_erosion(mask, iterations=thickness, border_value=0)
    canvas[outline] = MASK_COLOUR
    picture = Image.fromarray(canvas)
    if boxes is not None and len(boxes):
        draw = ImageDraw.Draw(picture)
        for x0, y0, x1, y1 in np.asarray(boxes, dtype=float).reshape(-1, 4):
            draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=BOX_COLOUR,
                           width=thickness)
    return write_atomic(path, lambda tmp: picture.save(tmp, format="PNG"))
