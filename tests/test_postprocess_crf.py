"""The dense CRF and the saliency -> coarse-mask step, on synthetic scenes with known targets."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from clipsam.errors import InputError
from clipsam.postprocess.coarse_mask import CoarseMaskConfig, coarse_mask
from clipsam.postprocess.crf import DenseCRFConfig, crf_mask, crf_probability, guide_channel
from clipsam.postprocess.threshold import kmeans_threshold, otsu_threshold


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def square_scene(size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright square in a noisy image, and a noisy, blurred, misplaced saliency map of it."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), bool)
    a, b = size * 3 // 10, size * 7 // 10
    truth[a:b, a:b + size // 10] = True
    image = np.where(truth, 170.0, 70.0) + rng.normal(0, 15, truth.shape)
    saliency = np.where(truth, 0.8, 0.2) + rng.normal(0, 0.35, truth.shape)
    saliency = ndimage.shift(ndimage.gaussian_filter(saliency, 2), (4, -5), mode="nearest")
    return image, saliency, truth


def test_crf_converges_to_the_square_better_than_thresholds():
    image, saliency, truth = square_scene()
    by_threshold = max(iou(otsu_threshold(saliency), truth), iou(kmeans_threshold(saliency), truth))
    by_crf = iou(crf_mask(saliency, image), truth)
    assert by_crf > 0.97
    assert by_crf > by_threshold + 0.05


def test_crf_follows_image_edges_in_colour_and_any_intensity_range():
    image, saliency, truth = square_scene(seed=1)
    colour = np.stack([image, 0.5 * image, 255 - image], axis=-1) / 255.0  # [0, 1] floats
    assert iou(crf_mask(saliency, colour), truth) > 0.97
    assert iou(crf_mask(saliency * 1000 - 3, image * 16), truth) > 0.97


def test_crf_without_appearance_term_cannot_find_the_edge():
    image, saliency, truth = square_scene()
    flat = DenseCRFConfig(appearance_weight=0.0)
    assert iou(crf_mask(saliency, image, flat), truth) < iou(crf_mask(saliency, image), truth)


def test_crf_marginals_are_probabilities_at_full_size():
    image, saliency, _ = square_scene(size=300)
    marginals = crf_probability(saliency, image, DenseCRFConfig(max_side=128))
    assert marginals.shape == (300, 300)
    assert marginals.min() >= 0.0 and marginals.max() <= 1.0
    with pytest.raises(InputError):
        crf_mask(saliency[:-1], image)


def test_guide_channel_range():
    guide = guide_channel(np.random.default_rng(0).random((20, 30, 3)))
    assert guide.shape == (20, 30)
    assert guide.min() == 0.0 and guide.max() == 255.0
    assert not guide_channel(np.ones((5, 5))).any()


def two_blob_saliency() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 16x16 patch-grid map with a big and a small blob, and the 160x160 image it explains."""
    grid = np.zeros((16, 16))
    grid[3:10, 3:10] = 1.0
    grid[12:14, 12:14] = 0.9
    image = np.kron(grid, np.ones((10, 10))) * 120 + 40
    big = np.zeros((160, 160), bool)
    big[30:100, 30:100] = True
    return grid, image, big


@pytest.mark.parametrize("method", ["crf", "kmeans", "otsu"])
def test_coarse_mask_from_a_patch_grid_map(method):
    grid, image, big = two_blob_saliency()
    largest = coarse_mask(grid, image, method=method)
    assert largest.shape == (160, 160)
    assert iou(largest, big) > 0.85
    both = coarse_mask(grid, image, method=method, keep="all")
    assert both[120:140, 120:140].any() and not largest[120:140, 120:140].any()
    assert np.array_equal(coarse_mask(grid, image, method=method, keep=2), both)


def test_coarse_mask_config_fill_and_specks():
    ring = np.zeros((40, 40))
    ring[5:35, 5:35] = 1.0
    ring[12:28, 12:28] = 0.0
    ring[37, 37] = 1.0
    config = CoarseMaskConfig(method="otsu", keep="all")
    filled = coarse_mask(ring, config=config)
    assert filled[20, 20] and filled[37, 37]
    open_config = CoarseMaskConfig(method="otsu", keep="all", fill_holes=False,
                                   min_speck_fraction=0.01)
    unfilled = coarse_mask(ring, config=open_config)
    assert not unfilled[20, 20] and not unfilled[37, 37]
    assert coarse_mask(ring, method="kmeans", config=config).sum() == filled.sum()
    calibrated = CoarseMaskConfig(method="threshold", level=0.95, keep="all")
    assert not coarse_mask(ring * 0.9, config=calibrated).any()
    assert coarse_mask(ring, config=calibrated).sum() == filled.sum()


def test_coarse_mask_rejects_bad_requests():
    grid, image, _ = two_blob_saliency()
    with pytest.raises(InputError):
        coarse_mask(grid, method="crf")
    with pytest.raises(InputError):
        coarse_mask(grid, image, method="kmeans", keep=0)
    with pytest.raises(InputError):
        coarse_mask(grid, image, method="watershed")
    assert not coarse_mask(np.zeros((8, 8)), np.zeros((32, 32)), method="crf").any()
