"""What limits box-anchored decoding on a set, per held-out image of the product path: how much
of the target lies inside the map's box prompts, what a perfect decoder inside those boxes
could reach, and whether the segmenter's own IoU prediction knows a good mask from a bad one.

For each image with a target, :func:`limit_row` takes the pipeline's answer (its box prompts,
its mask and the segmenter's predicted IoU per box) and the reference mask. The box-anchored
ceiling of an image is the Dice of the reference restricted to the boxes against the reference
(a decoder that segmented the target perfectly wherever the boxes cover it, and nothing else).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from clipsam.eval.metrics import dice, iou
from clipsam.postprocess.boxes import boxes_to_mask


@dataclass(frozen=True)
class LimitRow:
    """One image: ``dice`` and ``iou`` of the pipeline's mask; ``inside`` the share of the
    reference's pixels covered by the box prompts; ``ceiling`` the box-anchored ceiling;
    ``predicted_iou`` the segmenter's IoU prediction (mean over boxes; None without boxes)."""

    set: str
    id: str
    found: bool
    n_boxes: int
    dice: float
    iou: float
    inside: float
    ceiling: float
    predicted_iou: float | None

    def record(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def limit_row(set_name: str, case_id: str, mask: np.ndarray, boxes: np.ndarray,
              scores: np.ndarray, reference: np.ndarray, found: bool) -> LimitRow:
    """The :class:`LimitRow` of one image: ``mask`` and ``reference`` (H, W) bool, ``boxes``
    (K, 4) xyxy prompts and ``scores`` (K,) their predicted IoU."""
    reference = np.asarray(reference, bool)
    if not reference.any():
        raise ValueError(f"{set_name}/{case_id}: the reference is empty")
    covered = reference & boxes_to_mask(boxes, reference.shape)
    scores = np.asarray(scores, np.float64).reshape(-1)
    return LimitRow(set_name, case_id, bool(found), len(np.asarray(boxes).reshape(-1, 4)),
                    dice(mask, reference), iou(mask, reference),
                    float(covered.sum() / reference.sum()), dice(covered, reference),
                    float(scores.mean()) if scores.size else None)


def spearman(first: Sequence[float], second: Sequence[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None for fewer than three pairs or
    a constant side."""
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def summarise_limits(rows: Sequence[LimitRow], low: float = 0.5) -> dict[str, Any]:
    """Per set: images, mean Dice, mean box-anchored ceiling, how many images score below
    ``low``, how many of those were answered "not found" and how many found have less than
    ``low`` of the target inside the boxes, and
    the IoU prediction against the true IoU (Spearman; mean predicted minus mean true, where
    a box was decoded)."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r.set for r in rows):
        part = [r for r in rows if r.set == name]
        poor = [r for r in part if r.dice < low]
        rated = [r for r in part if r.predicted_iou is not None]
        out[name] = {
            "n": len(part),
            "dice": round(float(np.mean([r.dice for r in part])), 4),
            "ceiling": round(float(np.mean([r.ceiling for r in part])), 4),
            "below": len(poor),
            "below_not_found": sum(not r.found for r in poor),
            "below_mostly_outside": sum(r.found and r.inside < low for r in poor),
            "n_rated": len(rated),
            "iou_spearman": _rounded(spearman([r.predicted_iou for r in rated],
                                              [r.iou for r in rated])),
            "iou_overconfidence": _rounded(float(np.mean([r.predicted_iou - r.iou
                                                          for r in rated])) if rated else None),
        }
    return out


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, np.float64)
    ranks[order] = np.arange(values.size, dtype=np.float64)
    for value in np.unique(values):  # ties share their mean rank
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
