"""Connected components of a bool mask: label, keep the largest, drop specks, fill holes.

Components are 8-connected (pixels touching at a corner belong together) unless a function is
told otherwise; holes are background regions that do not touch the image border.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from clipsam.errors import InputError


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (4, 8):
        raise InputError(f"connectivity must be 4 or 8, got {connectivity}")
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def _as_mask(mask: np.ndarray) -> np.ndarray:
    array = np.asarray(mask).astype(bool, copy=False)
    if array.ndim != 2:
        raise InputError(f"expected a 2-D mask, got shape {array.shape}")
    return array


def label_components(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Label image (0 = background, 1..K) and the (K,) pixel areas of components 1..K."""
    labels, count = ndimage.label(_as_mask(mask), structure=_structure(connectivity))
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return labels, areas


def keep_largest(mask: np.ndarray, count: int = 1, connectivity: int = 8) -> np.ndarray:
    """Only the ``count`` largest components (ties broken by label order, i.e. raster order)."""
    if count < 1:
        raise InputError(f"count of components to keep must be >= 1, got {count}")
    labels, areas = label_components(mask, connectivity)
    if areas.size <= count:
        return labels > 0
    order = np.argsort(-areas, kind="stable")[:count]
    return np.isin(labels, order + 1)


def drop_specks(
    mask: np.ndarray,
    min_fraction: float,
    relative_to: Literal["largest", "image"] = "largest",
    connectivity: int = 8,
) -> np.ndarray:
    """Remove components smaller than ``min_fraction`` of the largest component (or the image)."""
    labels, areas = label_components(mask, connectivity)
    if areas.size == 0:
        return labels > 0
    reference = areas.max() if relative_to == "largest" else labels.size
    keep = np.flatnonzero(areas >= min_fraction * reference) + 1
    return np.isin(labels, keep)


def fill_holes(mask: np.ndarray, max_fraction: float | None = None) -> np.ndarray:
    """Fill enclosed background; with ``max_fraction`` only holes up to that fraction of the image.

    Holes are 4-connected background regions not touching the border, so a diagonal gap in an
    8-connected outline does not leak.
    """
    array = _as_mask(mask)
    filled = ndimage.binary_fill_holes(array, structure=_structure(4))
    if max_fraction is None:
        return filled
    holes, _ = label_components(filled & ~array, connectivity=4)
    sizes = np.bincount(holes.ravel())
    small = np.flatnonzero(sizes <= max_fraction * array.size)
    small = small[small > 0]
    return array | np.isin(holes, small)
