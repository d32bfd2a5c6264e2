"""Crops of proposal masks, as SaLIP shows them to a CLIP-family model."""

from __future__ import annotations

import numpy as np

from clipsam.errors import InputError
from clipsam.postprocess.boxes import expand_boxes

CROP_MODES = ("masked", "box", "enlarged")


def crop_proposal(
    image: np.ndarray, mask: np.ndarray, box: np.ndarray, mode: str = "masked",
    enlarge: float = 1.25,
) -> np.ndarray:
    """The image region of one proposal.

    ``masked``: pixels outside the mask set to zero, cut to the mask's box (SaLIP's crops);
    ``box``: the unmasked box; ``enlarged``: the unmasked box grown by ``enlarge`` (context).
    """
    if mode not in CROP_MODES:
        raise InputError(f"unknown crop mode {mode!r}; use one of {', '.join(CROP_MODES)}")
    if mode == "enlarged":
        box = expand_boxes(box[None], mask.shape, fraction=(enlarge - 1.0) / 2.0)[0]
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    region = np.asarray(image)[y1:y2, x1:x2]
    if mode != "masked":
        return region.copy()
    inside = mask[y1:y2, x1:x2]
    if region.ndim == 3:
        inside = inside[..., None]
    return np.where(inside, region, np.zeros((), region.dtype))
