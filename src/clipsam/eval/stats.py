"""Summary statistics of paired per-case scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def paired_difference(first: Sequence[float], second: Sequence[float],
                      resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``first - second`` (paired, case by case) and its 95 % bootstrap interval
    (``resamples`` resamples of the cases with a fixed ``seed``; percentiles 2.5 and 97.5)."""
    differences = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    if differences.ndim != 1 or differences.size == 0:
        raise ValueError("paired differences need two equally long, non-empty score lists")
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences),
                                     (resamples, len(differences)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(differences.mean()), float(low), float(high)
