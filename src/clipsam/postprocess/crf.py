"""A two-label fully connected CRF that binarises a saliency map with the image as guide.

The model is Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian
Edge Potentials", NeurIPS 2011: unary ``-log p`` from the map's foreground probabilities, a
Potts pairwise term with a Gaussian smoothness kernel (position only) and a bilateral appearance
kernel (position and intensity), solved by mean-field iterations.

Our own implementation and approximations, chosen to run in a few tens of milliseconds on CPU:

* inference runs on a grid whose longer side is at most ``max_side`` pixels (kernel widths are
  scaled with it) and the marginals are upsampled bilinearly;
* the bilateral kernel is applied with a bilateral grid (Chen, Paris & Durand, SIGGRAPH 2007):
  trilinear splatting onto a lattice over (y, x, intensity) spaced at half a kernel width,
  a Gaussian blur there, and trilinear slicing back;
* the guide is one intensity channel: the image itself when grey, its first colour principal
  component when colour, rescaled to 0-255 between its 0.5th and 99.5th percentiles, so
  ``appearance_sigma_intensity`` is in 8-bit grey levels whatever the input range;
* messages are normalised (each pixel receives the kernel-weighted mean of the others'
  marginals), like the reference implementation's default symmetric normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from skimage.transform import resize

from clipsam.errors import InputError
from clipsam.postprocess.threshold import as_float_map, rescale_unit

# Lattice cells per kernel width, and the grid blur that, with the two trilinear (tent) steps
# of variance 1/6 cell^2 each, adds up to exactly one kernel width.
_CELLS_PER_SIGMA = 2.0
_GRID_BLUR = float(np.sqrt(_CELLS_PER_SIGMA**2 - 2.0 / 6.0))


@dataclass(frozen=True)
class DenseCRFConfig:
    """Kernel weights and widths (pixels, 8-bit grey levels) of the dense CRF.

    Defaults are the reference implementation's example settings (smoothness: weight 3,
    width 3 px; appearance: weight 10, 80 px, 13 grey levels) and 5 mean-field iterations.
    ``probability_floor`` keeps the unary finite: the rescaled map is clipped to
    [floor, 1 - floor] before ``-log``.
    """

    iterations: int = 5
    smoothness_weight: float = 3.0
    smoothness_sigma: float = 3.0
    appearance_weight: float = 10.0
    appearance_sigma_xy: float = 80.0
    appearance_sigma_intensity: float = 13.0
    probability_floor: float = 0.02
    max_side: int = 256


def guide_channel(image: np.ndarray) -> np.ndarray:
    """One float intensity channel of an (H, W) or (H, W, C) image, rescaled to 0-255."""
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3:
        colours = array[:, :, :3].reshape(-1, 3)
        centred = colours - colours.mean(axis=0)
        _, _, components = np.linalg.svd(centred[:: max(1, centred.shape[0] // 20000)],
                                         full_matrices=False)
        axis = components[0] * np.sign(components[0].sum() or 1.0)
        array = (centred @ axis).reshape(array.shape[:2])
    if array.ndim != 2:
        raise InputError(f"expected an (H, W) or (H, W, C) image, got shape {np.shape(image)}")
    low, high = np.percentile(array, [0.5, 99.5])
    if high <= low:
        return np.zeros(array.shape)
    return np.clip((array - low) / (high - low), 0.0, 1.0) * 255.0


def _splat_matrix(coords: np.ndarray) -> tuple[sparse.csr_matrix, tuple[int, ...]]:
    """Trilinear splatting weights from P points with (P, D) lattice coordinates to the cells."""
    base = np.floor(coords).astype(np.int64)
    frac = coords - base
    shape = tuple(int(s) for s in base.max(axis=0) + 2)
    strides = np.cumprod((1, *shape[:0:-1]))[::-1]
    rows, weights = [], []
    for corner in np.ndindex(*(2,) * coords.shape[1]):
        offset = np.array(corner)
        rows.append((base + offset) @ strides)
        weights.append(np.prod(np.where(offset == 1, frac, 1.0 - frac), axis=1))
    points = np.tile(np.arange(coords.shape[0]), len(rows))
    matrix = sparse.csr_matrix(
        (np.concatenate(weights), (np.concatenate(rows), points)),
        shape=(int(np.prod(shape)), coords.shape[0]),
    )
    return matrix, shape


class _BilateralFilter:
    """Normalised bilateral filtering of (H, W) maps on a fixed guide, via a bilateral grid."""

    def __init__(self, guide: np.ndarray, sigma_xy: float, sigma_intensity: float) -> None:
        height, width = guide.shape
        yy, xx = np.mgrid[0:height, 0:width]
        coords = np.stack(
            [yy.ravel() / sigma_xy, xx.ravel() / sigma_xy, guide.ravel() / sigma_intensity],
            axis=1,
        ) * _CELLS_PER_SIGMA
        self.splat, self.grid_shape = _splat_matrix(coords)
        self.slice = self.splat.T.tocsr()
        self.image_shape = guide.shape
        self.norm = self._raw(np.ones(height * width))

    def _raw(self, values: np.ndarray) -> np.ndarray:
        grid = (self.splat @ values).reshape(self.grid_shape)
        grid = ndimage.gaussian_filter(grid, _GRID_BLUR, mode="constant", truncate=3.0)
        return self.slice @ grid.ravel()

    def __call__(self, values: np.ndarray) -> np.ndarray:
        out = self._raw(values.ravel()) / np.maximum(self.norm, 1e-12)
        return out.reshape(self.image_shape)


def crf_probability(
    probability: np.ndarray, image: np.ndarray, config: DenseCRFConfig = DenseCRFConfig()
) -> np.ndarray:
    """Foreground marginals (H, W) in [0, 1] of the dense CRF.

    ``probability`` is the saliency map at the image's size, min-max rescaled to [0, 1] and read
    as the foreground probability; ``image`` is the guide, (H, W) or (H, W, C).
    """
    saliency = as_float_map(probability)
    guide = guide_channel(image)
    if guide.shape != saliency.shape:
        raise InputError(f"saliency map {saliency.shape} and image {guide.shape} differ in size")
    size = saliency.shape
    scale = min(1.0, config.max_side / max(size))
    work = tuple(max(1, round(s * scale)) for s in size)
    if work != size:
        saliency = resize(saliency, work, order=1, anti_aliasing=True)
        guide = resize(guide, work, order=1, anti_aliasing=True)
    floor = config.probability_floor
    prob = np.clip(rescale_unit(saliency), floor, 1.0 - floor)
    unary_logit = np.log(prob) - np.log1p(-prob)

    bilateral = _BilateralFilter(
        guide, config.appearance_sigma_xy * scale, config.appearance_sigma_intensity
    )
    smooth_sigma = config.smoothness_sigma * scale
    foreground = prob
    for _ in range(config.iterations):
        # Potts model, two labels: the background's message is 1 - the foreground's.
        logit = unary_logit + config.appearance_weight * (2.0 * bilateral(foreground) - 1.0)
        logit += config.smoothness_weight * (
            2.0 * ndimage.gaussian_filter(foreground, smooth_sigma, mode="reflect") - 1.0
        )
        foreground = 1.0 / (1.0 + np.exp(-logit))
    if work != size:
        foreground = resize(foreground, size, order=1)
    return foreground


def crf_mask(
    probability: np.ndarray, image: np.ndarray, config: DenseCRFConfig = DenseCRFConfig()
) -> np.ndarray:
    """Bool mask where the dense CRF's foreground marginal exceeds one half."""
    return crf_probability(probability, image, config) > 0.5
