"""How well a presence score tells images with a target from images without it.

An image's target is answered "found" when its presence score is at least the threshold. The
images without the target fall into groups (the concept's own set's empty images, other sets'
images): each group's "not found" rate counts equally, so a handful of hard empty images of
the target's own set is not drowned by hundreds of easy images of other sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def recall_at(positives: np.ndarray, threshold: float) -> float | None:
    """Share of ``positives`` (scores of images with the target) at or above ``threshold``
    (None without positives)."""
    positives = np.asarray(positives, np.float64)
    return float(np.mean(positives >= threshold)) if positives.size else None


def not_found_rate(groups: Sequence[np.ndarray], threshold: float) -> float | None:
    """Mean over the non-empty ``groups`` (scores of images without the target) of the share
    scoring below ``threshold``; None when every group is empty."""
    rates = [float(np.mean(np.asarray(g, np.float64) < threshold)) for g in groups if len(g)]
    return float(np.mean(rates)) if rates else None


def auc(positives: np.ndarray, negatives: np.ndarray) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half):
    the area under the ROC curve; None when either side is empty."""
    positives = np.asarray(positives, np.float64)
    negatives = np.asarray(negatives, np.float64)
    if not positives.size or not negatives.size:
        return None
    above = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(above + 0.5 * ties)


def group_auc(positives: np.ndarray, groups: Sequence[np.ndarray]) -> float | None:
    """Mean :func:`auc` of ``positives`` against each non-empty group (None when none)."""
    values = [auc(positives, g) for g in groups if len(g)]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None
