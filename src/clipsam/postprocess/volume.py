"""Along the slice axis of a volume: smoothing per-slice scores, runs of slices, 3-D components
(those anchored on confident slices, those large beside the largest).

Pure array functions for :mod:`clipsam.pipelines.volume`; slices are indexed 0..Z-1 in the
order of the volume.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from clipsam.errors import InputError


def smoothing_radius(sigma: float) -> int:
    """How many slices on each side a Gaussian of ``sigma`` slices reaches (3 sigma, rounded
    up; 0 for no smoothing)."""
    return math.ceil(3.0 * sigma) if sigma > 0 else 0


def gaussian_weights(sigma: float) -> np.ndarray:
    """(2R + 1,) weights of a Gaussian of ``sigma`` slices cut at :func:`smoothing_radius` R,
    summing to 1 (``[1.0]`` for no smoothing)."""
    radius = smoothing_radius(sigma)
    if radius == 0:
        return np.ones(1)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def smooth_at(scores: np.ndarray, index: int, sigma: float) -> float:
    """The two-sided Gaussian average of ``scores`` around ``index``; near the ends of the
    volume the weights that fall outside are dropped and the rest renormalised. Only the
    scores within :func:`smoothing_radius` of ``index`` are read."""
    weights = gaussian_weights(sigma)
    radius = len(weights) // 2
    low, high = max(0, index - radius), min(len(scores), index + radius + 1)
    part = weights[low - index + radius: high - index + radius]
    return float(np.dot(part, np.asarray(scores[low:high], np.float64)) / part.sum())


def smooth_scores(scores: np.ndarray, sigma: float) -> np.ndarray:
    """(Z,) :func:`smooth_at` of every slice."""
    scores = np.asarray(scores, np.float64)
    return np.array([smooth_at(scores, z, sigma) for z in range(len(scores))])


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``(first, stop)`` of each maximal run of consecutive True slices (``stop`` exclusive)."""
    flags = np.asarray(flags, bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _kept_components(mask: np.ndarray,
                     choose: Callable[[np.ndarray, np.ndarray, int], np.ndarray],
                     ) -> tuple[np.ndarray, int]:
    """``mask`` ((Z, H, W) bool, not empty) with only the 3-D components (26-connected) that
    ``choose(labels, box, count)`` keeps ((count + 1,) bool over the labels of the mask's
    bounding box ``box``; label 0 is background), and how many were dropped."""
    box = ndimage.find_objects(mask.astype(np.uint8))[0]  # work inside the mask's bounding box
    labels, count = ndimage.label(mask[box], structure=np.ones((3, 3, 3), bool))
    keep = choose(labels, box, count)
    keep[0] = False
    kept = np.zeros_like(mask)
    kept[box] = keep[labels]
    return kept, int(count - keep.sum())


def major_components(mask: np.ndarray, fraction: float) -> tuple[np.ndarray, int]:
    """The (Z, H, W) mask without its 3-D components (26-connected) of fewer voxels than
    ``fraction`` of the largest one, and how many were dropped (0: every component kept)."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 3 or not 0.0 <= fraction <= 1.0:
        raise InputError(f"expected a (Z, H, W) mask and a fraction in [0, 1], got {mask.shape} "
                         f"and {fraction}")
    if fraction == 0.0 or not mask.any():
        return mask, 0

    def large(labels: np.ndarray, box: tuple, count: int) -> np.ndarray:
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        sizes[0] = 0
        return sizes >= fraction * sizes.max()

    return _kept_components(mask, large)


def anchored_components(mask: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, int]:
    """The (Z, H, W) mask without its 3-D components (26-connected) that have no voxel on an
    anchor slice (``anchors``: (Z,) bool), and how many components were dropped."""
    mask = np.asarray(mask, bool)
    anchors = np.asarray(anchors, bool)
    if mask.ndim != 3 or anchors.shape != mask.shape[:1]:
        raise InputError(f"expected a (Z, H, W) mask and (Z,) anchors, got {mask.shape} and "
                         f"{anchors.shape}")
    if not mask.any():
        return mask, 0

    def anchored(labels: np.ndarray, box: tuple, count: int) -> np.ndarray:
        keep = np.zeros(count + 1, bool)
        keep[np.unique(labels[anchors[box[0]]])] = True
        return keep

    return _kept_components(mask, anchored)
