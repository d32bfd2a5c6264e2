"""Bilinear resampling in numpy, matching ``torch.nn.functional.interpolate(mode="bilinear",
align_corners=False)`` with and without ``antialias`` (to float32 rounding), so images are
prepared and masks read back the same way in every runtime, without importing torch.

Plain bilinear takes the two nearest source pixels along each axis (source coordinate
``(i + 0.5) * in / out - 0.5``, clamped at 0); antialiased bilinear averages the source pixels
under a triangle filter widened by the downscaling factor (the filter torch and Pillow use),
renormalised at the borders, as a sparse (out, in) matrix per axis.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy import sparse


def linear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain bilinear along one axis: the two source indices of every output pixel and the
    weight of the second (float32 arithmetic, as torch's CPU kernel)."""
    scale = np.float32(size_in / size_out)
    source = np.maximum((np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale
                        - np.float32(0.5), np.float32(0.0))
    first = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    second = np.minimum(first + 1, size_in - 1)
    frac = np.clip(source - first, 0.0, 1.0).astype(np.float32)
    return first, second, frac


@lru_cache(maxsize=64)
def antialias_weights(size_in: int, size_out: int) -> sparse.csr_matrix:
    """(size_out, size_in) float32 weights of the widened triangle filter along one axis."""
    from scipy import sparse

    scale = size_in / size_out
    support = scale if scale >= 1.0 else 1.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    rows, cols, values = [], [], []
    for i in range(size_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), size_in)
        taps = np.arange(lo, hi)
        weights = np.clip(1.0 - np.abs((taps - center + 0.5) * inv), 0.0, None)
        rows.append(np.full(taps.size, i))
        cols.append(taps)
        values.append(weights / max(weights.sum(), 1e-12))
    return sparse.csr_matrix((np.concatenate(values).astype(np.float32),
                              (np.concatenate(rows), np.concatenate(cols))),
                             shape=(size_out, size_in))


def _linear_axis(array: np.ndarray, size_out: int, axis: int) -> np.ndarray:
    first, second, frac = linear_taps(array.shape[axis], size_out)
    shape = [1] * array.ndim
    shape[axis] = size_out
    frac = frac.reshape(shape)
    low = np.take(array, first, axis=axis)
    out = np.take(array, second, axis=axis)
    out -= low
    out *= frac
    out += low
    return out


def resize_bilinear(array: np.ndarray, size: tuple[int, int], antialias: bool) -> np.ndarray:
    """(..., H, W) -> (..., h, w) float32, bilinear (see the module notes)."""
    array = np.asarray(array, dtype=np.float32)
    *lead, height, width = array.shape
    h, w = size
    if (h, w) == (height, width):
        return array.copy()
    planes = array.reshape(-1, height, width)
    if not antialias:  # plane by plane: the gathers stay in cache
        out = np.stack([_linear_axis(_linear_axis(p, h, 0), w, 1) for p in planes])
        return out.reshape(*lead, h, w)
    n = planes.shape[0]
    rows = antialias_weights(height, h) @ planes.transpose(1, 0, 2).reshape(height, n * width)
    rows = rows.reshape(h, n, width).transpose(1, 0, 2).reshape(n * h, width)
    out = (antialias_weights(width, w) @ rows.T).T
    return np.ascontiguousarray(out.reshape(*lead, h, w), dtype=np.float32)
