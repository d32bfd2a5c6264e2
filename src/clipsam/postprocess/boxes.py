"""Boxes from masks, and box arithmetic.

Convention everywhere in clipsam: a box is ``(x1, y1, x2, y2)`` in original-image pixels, as
float32, with ``x1, y1`` inclusive and ``x2, y2`` exclusive, i.e. pixel-edge coordinates. A box
around the pixels ``mask[y1:y2, x1:x2]`` is exactly ``(x1, y1, x2, y2)``; its width is
``x2 - x1``; the whole (H, W) image is ``(0, 0, W, H)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clipsam.errors import InputError
from clipsam.postprocess.components import label_components


def mask_to_box(mask: np.ndarray) -> np.ndarray | None:
    """The tight (4,) box around all foreground pixels, or None for an empty mask."""
    array = np.asarray(mask, dtype=bool)
    if array.ndim != 2:
        raise InputError(f"expected a 2-D mask, got shape {array.shape}")
    rows = np.flatnonzero(array.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(array.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, 4) tight boxes of (N, H, W) masks; an empty mask gets the empty box (0, 0, 0, 0)."""
    array = np.asarray(masks, dtype=bool)
    if array.ndim != 3:
        raise InputError(f"expected (N, H, W) masks, got shape {array.shape}")
    n, height, width = array.shape
    rows = array.any(axis=2)
    cols = array.any(axis=1)
    boxes = np.zeros((n, 4), dtype=np.float32)
    present = rows.any(axis=1)
    boxes[present, 0] = np.argmax(cols[present], axis=1)
    boxes[present, 1] = np.argmax(rows[present], axis=1)
    boxes[present, 2] = width - np.argmax(cols[present, ::-1], axis=1)
    boxes[present, 3] = height - np.argmax(rows[present, ::-1], axis=1)
    return boxes


def label_boxes(labels: np.ndarray) -> np.ndarray:
    """(K, 4) tight boxes of labels 1..K of an (H, W) integer label image (K = its maximum);
    a label with no pixel gets the empty box (0, 0, 0, 0)."""
    array = np.asarray(labels)
    if array.ndim != 2:
        raise InputError(f"expected a 2-D label image, got shape {array.shape}")
    regions = ndimage.find_objects(array)
    boxes = np.zeros((len(regions), 4), dtype=np.float32)
    for index, region in enumerate(regions):
        if region is not None:
            rows, cols = region
            boxes[index] = (cols.start, rows.start, cols.stop, rows.stop)
    return boxes


def component_boxes(mask: np.ndarray, connectivity: int = 8,
                    min_fraction: float = 0.0) -> np.ndarray:
    """(K, 4) one box per connected component, largest component first.

    Components smaller than ``min_fraction`` of the image are specks and get no box, unless
    every component is that small: then the largest still gets one. An empty mask gives K=0.
    """
    labels, areas = label_components(mask, connectivity)
    order = np.argsort(-areas, kind="stable")
    keep = areas[order] >= min_fraction * labels.size
    if areas.size and not keep.any():
        keep[0] = True
    return label_boxes(labels)[order[keep]]


def clip_boxes(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Boxes clipped to an (H, W) image."""
    height, width = image_size
    clipped = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
    clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0, width)
    clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0, height)
    return clipped


def check_boxes(boxes: object, image_size: tuple[int, int]) -> np.ndarray:
    """Boxes a person gave, as (K, 4) float32 clipped to the (H, W) image (K may be 0).

    Raises :class:`InputError` unless they are K rows of 4 finite numbers, each with
    ``x2 > x1`` and ``y2 > y1`` inside the image.
    """
    try:
        array = np.asarray(boxes, dtype=np.float32)
    except (TypeError, ValueError):
        array = np.zeros((1, 0), np.float32)
    if array.size == 0 and array.ndim == 1:
        return np.zeros((0, 4), np.float32)
    if array.ndim != 2 or array.shape[1] != 4 or not np.isfinite(array).all():
        raise InputError("boxes must be a list of [x1, y1, x2, y2] in image pixels")
    clipped = clip_boxes(array, image_size)
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    if empty.any():
        height, width = image_size
        raise InputError(f"box {array[empty][0].tolist()} is empty or outside the {width}x{height} "
                         "image (need x2 > x1 and y2 > y1)")
    return clipped


def expand_boxes(
    boxes: np.ndarray,
    image_size: tuple[int, int],
    pixels: float = 0.0,
    fraction: float = 0.0,
) -> np.ndarray:
    """Grow each side by ``pixels`` plus ``fraction`` of the box's width (x) or height (y),
    then clip to the (H, W) image. Negative values shrink."""
    grown = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    dx = pixels + fraction * (grown[:, 2] - grown[:, 0])
    dy = pixels + fraction * (grown[:, 3] - grown[:, 1])
    grown = grown + np.stack([-dx, -dy, dx, dy], axis=1)
    return clip_boxes(grown, image_size)


def boxes_to_mask(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels covered by any of the (N, 4) boxes (a pixel counts when its
    centre lies inside a box)."""
    mask = np.zeros(size, bool)
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        mask[max(0, int(np.ceil(y1 - 0.5))):max(0, int(np.ceil(y2 - 0.5))),
             max(0, int(np.ceil(x1 - 0.5))):max(0, int(np.ceil(x2 - 0.5)))] = True
    return mask


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """(N,) areas of (N, 4) boxes (zero for degenerate boxes)."""
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(array[:, 2] - array[:, 0], 0, None) * np.clip(array[:, 3] - array[:, 1], 0, None)


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(N, M) intersection-over-union of two sets of boxes; 0 where the union is empty."""
    a = np.asarray(first, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(second, dtype=np.float64).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 2], b[None, :, 2])
    bottom = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = box_areas(a)[:, None] + box_areas(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
