"""Binarise a float map (saliency, probability): Otsu, two-cluster k-means, or a fixed value.

Every function accepts a 2-D map of any real range, ignores non-finite values, and returns a
bool mask of the same shape. A constant map has no foreground to separate: the result is empty.
"""

from __future__ import annotations

import numpy as np

from clipsam.errors import InputError


def as_float_map(values: np.ndarray) -> np.ndarray:
    """The map as a 2-D float64 array with non-finite entries replaced by its minimum."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.size == 0:
        raise InputError(f"expected a non-empty 2-D map, got shape {array.shape}")
    finite = np.isfinite(array)
    if not finite.all():
        fill = array[finite].min() if finite.any() else 0.0
        array = np.where(finite, array, fill)
    return array


def rescale_unit(values: np.ndarray) -> np.ndarray:
    """Min-max rescale a map to [0, 1]; a constant map becomes all zeros."""
    array = as_float_map(values)
    low, high = array.min(), array.max()
    if high <= low:
        return np.zeros_like(array)
    return (array - low) / (high - low)


def otsu_level(values: np.ndarray, bins: int = 256) -> float:
    """The level that maximises the between-class variance of the map's histogram (Otsu 1979).

    Returns a value in the map's own range; pixels at or above it are foreground.
    """
    array = as_float_map(values)
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return high
    counts, edges = np.histogram(array, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    cumulative = np.cumsum(counts * centres)
    mean_low = cumulative / np.maximum(weight_low, 1)
    mean_high = (cumulative[-1] - cumulative) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    # The level sits on the upper edge of the last background bin.
    return float(edges[int(np.argmax(between[:-1])) + 1])


def otsu_threshold(values: np.ndarray, bins: int = 256) -> np.ndarray:
    """Foreground where the map reaches its Otsu level."""
    array = as_float_map(values)
    if array.max() <= array.min():
        return np.zeros(array.shape, dtype=bool)
    return array >= otsu_level(array, bins)


def kmeans_centres(
    values: np.ndarray, iterations: int = 100, seed: int = 0, sample: int = 200_000
) -> tuple[float, float]:
    """Centres (low, high) of a two-cluster 1-D k-means (Lloyd) on the map's values.

    Starts from the 25th and 75th percentiles so the result does not depend on chance; ``seed``
    only picks the subsample used when the map has more than ``sample`` values.
    """
    flat = as_float_map(values).ravel()
    if flat.size > sample:
        flat = np.random.default_rng(seed).choice(flat, size=sample, replace=False)
    low, high = np.percentile(flat, [25.0, 75.0])
    if high <= low:
        low, high = flat.min(), flat.max()
    for _ in range(iterations):
        split = (low + high) / 2
        upper = flat > split
        if upper.all() or not upper.any():
            break
        new_low, new_high = flat[~upper].mean(), flat[upper].mean()
        if new_low == low and new_high == high:
            break
        low, high = new_low, new_high
    return float(low), float(high)


def kmeans_threshold(values: np.ndarray, iterations: int = 100, seed: int = 0) -> np.ndarray:
    """Foreground where a value is nearer the high of two k-means centres."""
    array = as_float_map(values)
    if array.max() <= array.min():
        return np.zeros(array.shape, dtype=bool)
    low, high = kmeans_centres(array, iterations=iterations, seed=seed)
    return array > (low + high) / 2


def fixed_threshold(values: np.ndarray, level: float = 0.5, rescale: bool = True) -> np.ndarray:
    """Foreground where the map exceeds ``level``; after min-max rescaling if ``rescale``."""
    array = rescale_unit(values) if rescale else as_float_map(values)
    return array > level
