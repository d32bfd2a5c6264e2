"""HD95 and NSD, computed on the masks' bounding box, equal MONAI's and a brute-force computation.

The brute force measures every boundary pixel against every boundary pixel of the whole image;
both it and MONAI must give bitwise the same floats as :mod:`clipsam.eval.metrics`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from scipy import ndimage

from clipsam.errors import InputError
from clipsam.eval.metrics import hd95, nsd, score_mask

SPACINGS = [None, (1.0, 1.0), (0.7, 0.3), (2.5, 0.13), (1 / 3, 0.2), (0.0762, 0.0762)]
TOLERANCES = [0.0, 0.3, 1.0, math.sqrt(2), 1.4, 2.0, 3.7]


def random_pair(rng: np.random.Generator, kind: int) -> tuple[np.ndarray, np.ndarray]:
    """A prediction and reference of a random shape: noise, smooth blobs, a shifted blob, a pixel
    and a line, or a full image against holes - most touch the image border somewhere."""
    shape = tuple(int(n) for n in rng.integers(1, 40, 2))
    smooth = [ndimage.gaussian_filter(rng.standard_normal(shape), 2) for _ in range(2)]
    if kind == 0:
        return rng.random(shape) < rng.random(), rng.random(shape) < rng.random()
    if kind == 1:
        return smooth[0] > rng.normal(0, 0.3), smooth[1] > rng.normal(0, 0.3)
    if kind == 2:
        return np.roll(smooth[0] > 0, tuple(rng.integers(-3, 4, 2)), (0, 1)), smooth[0] > 0
    if kind == 3:
        pixel, line = np.zeros(shape, bool), np.zeros(shape, bool)
        pixel[rng.integers(shape[0]), rng.integers(shape[1])] = True
        line[rng.integers(shape[0]), :] = True
        return pixel, line
    return np.ones(shape, bool), rng.random(shape) < 0.9


def brute_distances(prediction: np.ndarray, reference: np.ndarray,
                    spacing: tuple[float, float] | None) -> list[np.ndarray]:
    """Float32 distances from each boundary pixel to every boundary pixel of the other mask,
    the nearest kept; positions counted from the pixel before the masks' bounding box."""
    union = np.argwhere(prediction | reference)
    scale = np.asarray(spacing or (1.0, 1.0))
    points = [(np.argwhere(m & ~ndimage.binary_erosion(m)) - union.min(0) + 1) * scale
              for m in (prediction, reference)]
    return [np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).min(1).astype(np.float32)
            for a, b in (points, points[::-1])]


def brute_hd95(distances: list[np.ndarray]) -> float:
    """The larger directed 95th percentile, linearly interpolated in float32 as torch does."""
    return max(float(torch.quantile(torch.from_numpy(d), 0.95)) for d in distances)


def brute_nsd(distances: list[np.ndarray], tolerance: float) -> float:
    within = sum(int((d <= np.float32(tolerance)).sum()) for d in distances)
    return float(np.float32(within) / np.float32(sum(len(d) for d in distances)))


def monai_scores(prediction: np.ndarray, reference: np.ndarray,
                 spacing: tuple[float, float] | None, tolerance: float) -> tuple[float, float]:
    """MONAI's own HD95 and NSD, which the metrics module called before it measured them."""
    batched = [torch.from_numpy(m.astype(np.float32))[None, None] for m in (prediction, reference)]
    options = {"include_background": True, "spacing": list(spacing or (1.0, 1.0))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        distance = compute_hausdorff_distance(*batched, percentile=95, **options)
        surface = compute_surface_dice(*batched, class_thresholds=[tolerance], **options)
    return float(distance.item()), float(surface.item())


def test_hd95_and_nsd_equal_monai_and_brute_force_bitwise():
    rng = np.random.default_rng(20240611)
    for case in range(250):
        prediction, reference = random_pair(rng, case % 5)
        if not prediction.any() or not reference.any():
            continue
        spacing = SPACINGS[case % 6] if case % 4 else tuple(rng.uniform(0.05, 3.0, 2))
        tolerance = TOLERANCES[case % 7]
        distances = brute_distances(prediction, reference, spacing)
        expected = (brute_hd95(distances), brute_nsd(distances, tolerance))
        assert monai_scores(prediction, reference, spacing, tolerance) == expected, case
        assert (hd95(prediction, reference, spacing),
                nsd(prediction, reference, spacing, tolerance)) == expected, case
        scores = score_mask(prediction, reference, spacing, tolerance)
        assert (scores.hd95, scores.nsd) == expected, case


@pytest.mark.parametrize("spacing", [None, (0.7, 0.3)])
def test_realistic_masks_touching_the_border_equal_monai(spacing):
    rows, cols = np.mgrid[:300, :260]
    reference = (rows - 150) ** 2 / 90**2 + (cols - 40) ** 2 / 70**2 <= 1  # cut by the left edge
    prediction = np.roll(reference, (4, -3), (0, 1)) ^ (np.hypot(rows - 100, cols - 30) < 6)
    prediction[:, -1] = True  # a stray column on the right edge
    for tolerance in (1.0, 2.0, 2.1):
        assert (hd95(prediction, reference, spacing), nsd(prediction, reference, spacing,
                tolerance)) == monai_scores(prediction, reference, spacing, tolerance)


def test_empty_masks_give_nan_and_bad_inputs_raise():
    empty, blob = np.zeros((6, 7), bool), np.zeros((6, 7), bool)
    blob[0:3, 4:7] = True
    for prediction, reference in ((empty, empty), (blob, empty), (empty, blob)):
        scores = score_mask(prediction, reference, (0.5, 2.0))
        assert math.isnan(hd95(prediction, reference)) and math.isnan(nsd(prediction, reference))
        assert math.isnan(scores.hd95) and math.isnan(scores.nsd)
    for tolerance in (-0.5, math.inf, math.nan):
        with pytest.raises(InputError):
            nsd(blob, blob, tolerance_mm=tolerance)
    with pytest.raises(InputError):
        hd95(np.ones((2, 3, 3, 3), bool), np.ones((2, 3, 3, 3), bool))
    with pytest.raises(InputError, match="3 spacing values"):
        hd95(np.ones((3, 3, 3), bool), np.ones((3, 3, 3), bool), (1.0, 1.0))


@pytest.mark.parametrize("spacing", [None, (3.0, 0.7, 0.5), (1.0, 1.0, 1.0)])
def test_volumes_equal_monai_and_brute_force_bitwise(spacing):
    """3-D masks: face-neighbour boundaries, voxel spacing, MONAI's own figures."""
    rng = np.random.default_rng(7)
    for case in range(12):
        shape = tuple(int(n) for n in rng.integers(3, 14, 3))
        smooth = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
        reference = smooth > 0
        prediction = (np.roll(reference, tuple(rng.integers(-2, 3, 3)), (0, 1, 2))
                      if case % 2 else ndimage.gaussian_filter(rng.standard_normal(shape), 1.5) > 0)
        if not prediction.any() or not reference.any():
            continue
        union = np.argwhere(prediction | reference)
        scale = np.asarray(spacing or (1.0, 1.0, 1.0))
        points = [(np.argwhere(m & ~ndimage.binary_erosion(m)) - union.min(0) + 1) * scale
                  for m in (prediction, reference)]
        distances = [np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).min(1).astype(np.float32)
                     for a, b in (points, points[::-1])]
        expected = (brute_hd95(distances), brute_nsd(distances, 2.0))
        batched = [torch.from_numpy(m.astype(np.float32))[None, None]
                   for m in (prediction, reference)]
        options = {"include_background": True, "spacing": list(spacing or (1.0, 1.0, 1.0))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            monai = (float(compute_hausdorff_distance(*batched, percentile=95, **options).item()),
                     float(compute_surface_dice(*batched, class_thresholds=[2.0],
                                                **options).item()))
        assert monai == expected, case
        scores = score_mask(prediction, reference, spacing, 2.0)
        assert (scores.hd95, scores.nsd) == expected, case
