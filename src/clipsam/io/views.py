"""Pictures of a pipeline's intermediate views (saliency, coarse mask, proposals) for people."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipsam.io.atomic import write_atomic
from clipsam.io.overlay import to_display

PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                    [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230]], np.uint8)


def regions_picture(regions: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An RGB (H, W, 3) picture of (N, h, w) bool regions, one colour each, at ``size``."""
    canvas = np.zeros((*regions.shape[1:], 3), np.uint8)
    for index, region in enumerate(regions):
        canvas[region] = PALETTE[index % len(PALETTE)]
    return np.asarray(Image.fromarray(canvas).resize(size[::-1], Image.Resampling.NEAREST))


def render_views(intermediates: dict[str, Any], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """8-bit pictures, at the image's (H, W) ``size``, of a pipeline's intermediate views.

    A 2-D map (saliency, coarse mask) is stretched to gray levels; region proposals (a bool
    (N, H, W) stack, or an object with such ``masks``) are drawn one colour per region, and the
    ones listed in ``chosen`` once more on their own. Other values (scores, boxes) are skipped:
    the overlay and the record show them.
    """
    pictures: dict[str, np.ndarray] = {}
    for name, value in intermediates.items():
        regions = getattr(value, "masks", value)
        if not isinstance(regions, np.ndarray) or regions.size == 0:
            continue
        if regions.ndim == 3 and regions.dtype == bool:
            pictures[name] = regions_picture(regions, size)
            chosen = intermediates.get("chosen")
            if chosen is not None and len(chosen):
                picked = regions[np.asarray(chosen, dtype=int)]
                pictures[f"chosen {name}"] = regions_picture(picked, size)
        elif regions.ndim == 2 and min(regions.shape) >= 8 and (
                regions.dtype == bool or np.issubdtype(regions.dtype, np.number)):
            picture = Image.fromarray(to_display(regions.astype(np.float32)))
            resample = (Image.Resampling.NEAREST if regions.dtype == bool
                        else Image.Resampling.BILINEAR)
            pictures[name] = np.asarray(picture.resize(size[::-1], resample))
    return pictures


def write_views(folder: str | os.PathLike[str], intermediates: dict[str, Any],
                size: tuple[int, int]) -> list[Path]:
    """Write each view of :func:`render_views` as ``folder/<name>.png`` (atomically)."""
    written = []
    for name, picture in render_views(intermediates, size).items():
        path = Path(folder) / f"{name.replace(' ', '_')}.png"
        written.append(write_atomic(path, lambda p, pic=picture: Image.fromarray(pic).save(
            p, format="PNG")))
    return written
