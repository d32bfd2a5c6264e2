"""Between full-size images and the segmenter's embedding grid (64 x 64 for SAM-family)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from clipsam.models.segmenter import Geometry


def valid_cells(geometry: Geometry, grid: int) -> tuple[int, int]:
    """How many rows and columns of the (grid x grid) embedding hold image content."""
    cell = geometry.input_size / grid
    return (min(grid, int(np.ceil(geometry.resized_size[0] / cell))),
            min(grid, int(np.ceil(geometry.resized_size[1] / cell))))


def valid_mask(geometry: Geometry, grid: int) -> np.ndarray:
    """(grid, grid) bool: True on cells with image content (not padding)."""
    rows, cols = valid_cells(geometry, grid)
    mask = np.zeros((grid, grid), bool)
    mask[:rows, :cols] = True
    return mask


def mask_to_grid(mask: np.ndarray, geometry: Geometry, grid: int) -> np.ndarray:
    """(grid, grid) float32 fraction of each cell covered by a full-size (H, W) mask."""
    h, w = geometry.resized_size
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
    resized = np.asarray(image.resize((w, h), Image.BILINEAR), np.float32) / 255.0
    canvas = np.zeros((geometry.input_size, geometry.input_size), np.float32)
    canvas[:h, :w] = resized
    cell = geometry.input_size // grid
    return canvas[:grid * cell, :grid * cell].reshape(grid, cell, grid, cell).mean(axis=(1, 3))


def grid_box_to_image(box: np.ndarray, geometry: Geometry, grid: int) -> np.ndarray:
    """An xyxy box in grid cells (x1, y1 inclusive-start, x2, y2 exclusive-end) -> original px."""
    cell = geometry.input_size / grid
    sy = geometry.original_size[0] / geometry.resized_size[0]
    sx = geometry.original_size[1] / geometry.resized_size[1]
    x1, y1, x2, y2 = np.asarray(box, np.float32) * cell
    h, w = geometry.original_size
    return np.array([np.clip(x1 * sx, 0, w), np.clip(y1 * sy, 0, h),
                     np.clip(x2 * sx, 0, w), np.clip(y2 * sy, 0, h)], np.float32)


def boxes_to_grid(boxes: np.ndarray, geometry: Geometry, grid: int) -> np.ndarray:
    """(N, grid, grid) bool: the cells each (N, 4) xyxy box in original pixels touches (the
    inverse of :func:`grid_box_to_image`)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    cell = geometry.input_size / grid
    sy = geometry.resized_size[0] / geometry.original_size[0]
    sx = geometry.resized_size[1] / geometry.original_size[1]
    x1, y1, x2, y2 = (boxes * np.array([sx, sy, sx, sy]) / cell).T
    lo_x, hi_x = np.floor(x1).astype(int), np.ceil(x2).astype(int)
    lo_y, hi_y = np.floor(y1).astype(int), np.ceil(y2).astype(int)
    index = np.arange(grid)
    cols = (index >= lo_x[:, None]) & (index < hi_x[:, None])
    rows = (index >= lo_y[:, None]) & (index < hi_y[:, None])
    return rows[:, :, None] & cols[:, None, :]


def agreement(cover: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Soft Dice between (..., h, w) cell coverages and an (h, w) probability map: how well a
    region matches the map (1 only for the map itself; 0 for an empty region on an empty map).
    """
    cover = np.asarray(cover, np.float64)
    inter = (cover * prob).sum(axis=(-2, -1))
    total = cover.sum(axis=(-2, -1)) + float(np.sum(prob))
    return np.where(total > 0, 2 * inter / np.maximum(total, 1e-8), 0.0)
