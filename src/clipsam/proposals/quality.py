"""Label-free quality measures of predicted masks."""

from __future__ import annotations

import numpy as np


def stability_score(
    logits: np.ndarray, mask_threshold: float = 0.0, offset: float = 1.0
) -> np.ndarray:
    """(N,) IoU between each mask thresholded at ``mask_threshold + offset`` and at
    ``mask_threshold - offset`` (Kirillov et al., "Segment Anything", ICCV 2023, appendix):
    near 1 when the logits change sharply at the boundary. 0 when both masks are empty.

    ``logits`` is (N, h, w); the first mask is a subset of the second, so the IoU is the ratio
    of their areas.
    """
    values = np.asarray(logits)
    flat = values.reshape(values.shape[0], -1)
    inner = (flat > mask_threshold + offset).sum(axis=1)
    outer = (flat > mask_threshold - offset).sum(axis=1)
    return np.divide(inner, outer, out=np.zeros(inner.shape, np.float32),
                     where=outer > 0).astype(np.float32)
