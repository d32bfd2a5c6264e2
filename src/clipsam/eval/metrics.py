"""Overlap and boundary metrics for one binary mask against its reference (MONAI's functions).

Conventions when a mask is empty (MONAI alone would return NaN or inf here):

* both empty: Dice 1, IoU 1, HD95 and NSD missing (NaN) - there is no boundary to measure;
* one empty: Dice 0, IoU 0, HD95 and NSD missing (NaN).

Distances are in mm using the (row, col) pixel spacing when known, else 1 px = 1 mm. HD95 is
MONAI's symmetric 95th-percentile Hausdorff distance (the larger of the two directed 95th
percentiles of boundary-to-boundary distances). NSD is MONAI's normalised surface Dice: the
fraction of both boundaries lying within ``tolerance_mm`` of the other boundary.
MONAI (and torch) are imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from clipsam.errors import InputError

if TYPE_CHECKING:
    import torch

DEFAULT_NSD_TOLERANCE_MM = 2.0


@dataclass(frozen=True)
class MaskScores:
    """Scores of one predicted mask; ``hd95``/``nsd`` are NaN when a mask is empty."""

    dice: float
    iou: float
    hd95: float
    nsd: float


def _batched(mask: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def _pair(prediction: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if prediction.shape != reference.shape or prediction.ndim != 2:
        raise InputError(f"cannot score masks of shapes {prediction.shape} and "
                         f"{reference.shape}: both must be the same (H, W)")
    return prediction, reference


def _overlap(prediction: np.ndarray, reference: np.ndarray, metric: str) -> float:
    """MONAI's ``compute_dice`` / ``compute_iou``, with clipsam's rules for empty masks:
    1 when both are empty, 0 when only the reference is."""
    prediction, reference = _pair(prediction, reference)
    if not prediction.any() and not reference.any():
        return 1.0
    if not reference.any():
        return 0.0
    from monai import metrics

    compute = getattr(metrics, f"compute_{metric}")
    return float(compute(_batched(prediction), _batched(reference)).item())


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice similarity coefficient 2|P∩R| / (|P| + |R|); 1 when both are empty."""
    return _overlap(prediction, reference, "dice")


def iou(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Intersection over union |P∩R| / |P∪R|; 1 when both are empty."""
    return _overlap(prediction, reference, "iou")


def _surface_metric(prediction: np.ndarray, reference: np.ndarray, metric: str,
                    **options: object) -> float:
    """A MONAI boundary metric (``hausdorff_distance``, ``surface_dice``) of one mask pair;
    NaN when either mask is empty (no boundary to measure)."""
    prediction, reference = _pair(prediction, reference)
    if not prediction.any() or not reference.any():
        return math.nan
    from monai import metrics

    compute = getattr(metrics, f"compute_{metric}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        value = compute(_batched(prediction), _batched(reference), include_background=True,
                        **options)
    return float(value.item())


def hd95(
    prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, float] | None = None
) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm; NaN when either mask is empty."""
    return _surface_metric(prediction, reference, "hausdorff_distance", percentile=95,
                           spacing=_spacing(spacing))


def nsd(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: tuple[float, float] | None = None,
    tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> float:
    """Normalised surface Dice at ``tolerance_mm``; NaN when either mask is empty."""
    return _surface_metric(prediction, reference, "surface_dice",
                           class_thresholds=[float(tolerance_mm)], spacing=_spacing(spacing))


def score_mask(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: tuple[float, float] | None = None,
    tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> MaskScores:
    """Dice, IoU, HD95 and NSD of ``prediction`` against ``reference`` (see module notes)."""
    return MaskScores(dice=dice(prediction, reference), iou=iou(prediction, reference),
                      hd95=hd95(prediction, reference, spacing),
                      nsd=nsd(prediction, reference, spacing, tolerance_mm))


def _spacing(spacing: tuple[float, float] | None) -> list[float]:
    if spacing is None:
        return [1.0, 1.0]
    row, col = (float(v) for v in spacing)
    if not (row > 0 and col > 0):
        raise InputError(f"pixel spacing must be positive, got {spacing}")
    return [row, col]
