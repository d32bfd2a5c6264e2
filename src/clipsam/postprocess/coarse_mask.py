"""Saliency map -> coarse mask: the MedCLIP-SAM step between the text-driven saliency map and
the box prompts given to the segmenter (Koleilat et al., MICCAI 2024).

The map is brought to the image's size, binarised (dense CRF guided by the image, two-cluster
k-means, Otsu, or a fixed level for maps that are already probabilities), then cleaned:
connected components are selected, specks dropped, holes filled.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from skimage.transform import resize

from clipsam.errors import InputError
from clipsam.postprocess.components import drop_specks, fill_holes, keep_largest
from clipsam.postprocess.crf import DenseCRFConfig, crf_mask
from clipsam.postprocess.threshold import (
    as_float_map,
    fixed_threshold,
    kmeans_threshold,
    otsu_threshold,
)

Method = Literal["crf", "kmeans", "otsu", "threshold"]
Keep = Literal["largest", "all"] | int


@dataclass(frozen=True)
class CoarseMaskConfig:
    """How a saliency map becomes a coarse mask.

    ``method="threshold"`` keeps values above ``level`` without rescaling (calibrated maps).
    ``keep``: ``"largest"`` component, ``"all"`` components, or the N largest (an int).
    ``min_speck_fraction``: components smaller than this fraction of the largest are dropped
    first (0 keeps every speck). ``fill_holes``: fill background enclosed by the mask.
    """

    method: Method = "crf"
    keep: Keep = "largest"
    level: float = 0.5
    min_speck_fraction: float = 0.0
    fill_holes: bool = True
    crf: DenseCRFConfig = field(default_factory=DenseCRFConfig)


def _select(mask: np.ndarray, keep: Keep) -> np.ndarray:
    if keep == "all":
        return mask
    if keep == "largest":
        return keep_largest(mask, 1)
    if isinstance(keep, int) and not isinstance(keep, bool) and keep >= 1:
        return keep_largest(mask, keep)
    raise InputError(f"keep must be 'largest', 'all' or a positive int, got {keep!r}")


def _binarise(
    saliency: np.ndarray, image: np.ndarray | None, config: CoarseMaskConfig
) -> np.ndarray:
    if config.method == "crf":
        if image is None:
            raise InputError("the 'crf' coarse-mask method needs the image as a guide")
        return crf_mask(saliency, image, config.crf)
    if config.method == "kmeans":
        return kmeans_threshold(saliency)
    if config.method == "otsu":
        return otsu_threshold(saliency)
    if config.method == "threshold":
        return fixed_threshold(saliency, config.level, rescale=False)
    raise InputError(
        f"unknown coarse-mask method {config.method!r}; use 'crf', 'kmeans', 'otsu', 'threshold'"
    )


def coarse_mask(
    saliency: np.ndarray,
    image: np.ndarray | None = None,
    method: Method | None = None,
    keep: Keep | None = None,
    config: CoarseMaskConfig = CoarseMaskConfig(),
) -> np.ndarray:
    """A bool coarse mask from a 2-D saliency map (higher = more likely the target).

    With ``image`` ((H, W) or (H, W, C)) the map is resized bilinearly to (H, W) and the mask
    has that size; without it the mask has the map's size (``"crf"`` needs the image).
    ``method`` and ``keep``, when given, override the same fields of ``config``.
    """
    if method is not None or keep is not None:
        config = replace(config, method=method or config.method,
                         keep=config.keep if keep is None else keep)
    values = as_float_map(saliency)
    if image is not None:
        size = np.shape(image)[:2]
        if values.shape != size:
            values = resize(values, size, order=1, anti_aliasing=False)
    mask = _binarise(values, image, config)
    if config.min_speck_fraction > 0:
        mask = drop_specks(mask, config.min_speck_fraction)
    mask = _select(mask, config.keep)
    if config.fill_holes:
        mask = fill_holes(mask)
    return mask
