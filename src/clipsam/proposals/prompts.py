"""Prompt layouts for "segment everything": a point grid (SAM) and multi-scale box grids.

All coordinates are original-image pixels; boxes are xyxy with exclusive far corners (see
:mod:`clipsam.postprocess.boxes`).
"""

from __future__ import annotations

import numpy as np

from clipsam.config import BoxGridConfig
from clipsam.errors import InputError


def point_grid(image_size: tuple[int, int], points_per_side: int) -> np.ndarray:
    """(n*n, 2) xy points at the centres of an n x n tiling of an (H, W) image (SAM's grid)."""
    if points_per_side < 1:
        raise InputError(f"points_per_side must be >= 1, got {points_per_side}")
    height, width = image_size
    steps = (np.arange(points_per_side) + 0.5) / points_per_side
    ys, xs = np.meshgrid(steps * height, steps * width, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def _starts(extent: float, side: float, overlap: float) -> np.ndarray:
    if side >= extent:
        return np.zeros(1)
    stride = side * (1.0 - overlap)
    count = int(np.ceil((extent - side) / stride - 1e-9)) + 1
    return np.linspace(0.0, extent - side, count)


def box_grid(image_size: tuple[int, int], config: BoxGridConfig = BoxGridConfig()) -> np.ndarray:
    """(N, 4) float32 boxes tiling an (H, W) image at every size and aspect ratio of ``config``."""
    if not 0.0 <= config.overlap < 1.0:
        raise InputError(f"box overlap must be in [0, 1), got {config.overlap}")
    height, width = image_size
    short = min(height, width)
    boxes = []
    for size in config.sizes:
        for ratio in config.aspect_ratios:
            box_w = min(width, size * short * np.sqrt(ratio))
            box_h = min(height, size * short / np.sqrt(ratio))
            ys = _starts(height, box_h, config.overlap)
            xs = _starts(width, box_w, config.overlap)
            y0, x0 = np.meshgrid(ys, xs, indexing="ij")
            boxes.append(np.stack([x0.ravel(), y0.ravel(), x0.ravel() + box_w,
                                   y0.ravel() + box_h], axis=1))
    if not boxes:
        return np.zeros((0, 4), np.float32)
    return np.concatenate(boxes).astype(np.float32)
