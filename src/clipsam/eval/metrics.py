"""Overlap and boundary metrics for one binary mask against its reference (MONAI's definitions):
a 2-D (H, W) image or a 3-D (Z, H, W) volume.

Conventions when a mask is empty (MONAI alone would return NaN or inf here):

* both empty: Dice 1, IoU 1, HD95 and NSD missing (NaN) - there is no boundary to measure;
* one empty: Dice 0, IoU 0, HD95 and NSD missing (NaN).

Distances are in mm using the (row, col) pixel spacing, or the (slice, row, col) voxel spacing
of a volume, when known, else 1 px = 1 mm. HD95 is MONAI's symmetric 95th-percentile Hausdorff
distance (the larger of the two directed 95th percentiles of boundary-to-boundary distances).
NSD is MONAI's normalised surface Dice: the fraction of both boundaries lying within
``tolerance_mm`` of the other boundary. Both are computed here, on the masks' bounding box only,
exactly as MONAI 1.6 computes them (same boundary pixels - those with a face neighbour unset -,
coordinates, float32 rounding and percentile), so the values are bitwise equal; ``score_mask``
measures the boundary distances once for both.
MONAI, torch and scipy are imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

import math
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


Spacing = tuple[float, ...]
"""(row, col) pixel or (slice, row, col) voxel size in mm."""
Distances = tuple[np.ndarray, np.ndarray]
"""Float32 distances in mm from each prediction boundary pixel to the reference boundary, and
from each reference boundary pixel to the prediction boundary."""


def _batched(mask: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def _pair(prediction: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if prediction.shape != reference.shape or prediction.ndim not in (2, 3):
        raise InputError(f"cannot score masks of shapes {prediction.shape} and "
                         f"{reference.shape}: both must be the same (H, W) or (Z, H, W)")
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


@dataclass(frozen=True)
class SliceDetection:
    """Slice detection of a (Z, H, W) prediction: the slices holding the reference target
    (``ref``), those holding the prediction (``pred``) and those holding both (``hit``)."""

    ref: int
    pred: int
    hit: int

    @property
    def precision(self) -> float:
        """``hit / pred``; NaN when no slice holds the prediction."""
        return self.hit / self.pred if self.pred else math.nan

    @property
    def recall(self) -> float:
        """``hit / ref``; NaN when no slice holds the reference."""
        return self.hit / self.ref if self.ref else math.nan


def slice_detection(prediction: np.ndarray, reference: np.ndarray) -> SliceDetection:
    """Which slices (first axis) of ``prediction`` and ``reference`` hold any voxel."""
    prediction, reference = _pair(prediction, reference)
    if prediction.ndim != 3:
        raise InputError(f"slice detection needs (Z, H, W) masks, got {prediction.shape}")
    pred = prediction.reshape(len(prediction), -1).any(axis=1)
    ref = reference.reshape(len(reference), -1).any(axis=1)
    return SliceDetection(ref=int(ref.sum()), pred=int(pred.sum()), hit=int((ref & pred).sum()))


def hd95(
    prediction: np.ndarray, reference: np.ndarray, spacing: Spacing | None = None
) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm; NaN when either mask is empty."""
    return _hd95(_surface_distances(prediction, reference, spacing))


def nsd(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Spacing | None = None,
    tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> float:
    """Normalised surface Dice at ``tolerance_mm``; NaN when either mask is empty."""
    return _nsd(_surface_distances(prediction, reference, spacing), tolerance_mm)


def score_mask(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Spacing | None = None,
    tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> MaskScores:
    """Dice, IoU, HD95 and NSD of ``prediction`` against ``reference`` (see module notes)."""
    distances = _surface_distances(prediction, reference, spacing)
    return MaskScores(dice=dice(prediction, reference), iou=iou(prediction, reference),
                      hd95=_hd95(distances), nsd=_nsd(distances, tolerance_mm))


def _hd95(distances: Distances | None) -> float:
    """The larger directed 95th percentile (torch's linear interpolation, as MONAI); NaN if None."""
    if distances is None:
        return math.nan
    import torch

    return max(float(torch.quantile(torch.from_numpy(d), 0.95)) for d in distances)


def _nsd(distances: Distances | None, tolerance_mm: float) -> float:
    """Fraction of all boundary pixels within the tolerance, in float32 as MONAI; NaN if None."""
    tolerance = np.float32(_tolerance(tolerance_mm))
    if distances is None:
        return math.nan
    within = sum(np.count_nonzero(d <= tolerance) for d in distances)
    return float(np.float32(within) / np.float32(sum(d.size for d in distances)))


def _surface_distances(prediction: np.ndarray, reference: np.ndarray,
                       spacing: Spacing | None) -> Distances | None:
    """MONAI's boundary distances of a mask pair (``get_edge_surface_distance``, symmetric); None
    when either mask is empty (no boundary to measure)."""
    prediction, reference = _pair(prediction, reference)
    scale = np.asarray(_spacing(spacing, prediction.ndim))
    if not prediction.any() or not reference.any():
        return None
    box = _union_box(prediction, reference)
    points_pred = _boundary_points(prediction[box], scale)
    points_ref = _boundary_points(reference[box], scale)
    return _nearest(points_pred, points_ref), _nearest(points_ref, points_pred)


def _union_box(first: np.ndarray, second: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of the pixels set in either (non-empty) mask."""
    union = first | second
    box = []
    for axis in range(union.ndim):
        hit = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(hit[0], hit[-1] + 1))
    return tuple(box)


def _boundary_points(mask: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Positions in mm of the set pixels (voxels) with a face neighbour unset or off the image
    (MONAI's ``binary_erosion(mask) ^ mask``), counted as MONAI from the pixel before the box (the
    origin can change the last bit of a distance)."""
    padded = np.pad(mask, 1)
    core = (slice(1, -1),) * mask.ndim
    inner = padded[core]
    interior = inner.copy()
    for axis in range(mask.ndim):
        for step in (slice(None, -2), slice(2, None)):
            interior &= padded[(*core[:axis], step, *core[axis + 1:])]
    flat = np.flatnonzero(inner & ~interior)  # 10x np.argwhere
    return (np.stack(np.unravel_index(flat, mask.shape), axis=1) + 1) * scale


def _nearest(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest target, by MONAI's KD-tree, kept in float32."""
    from scipy.spatial import KDTree

    return KDTree(targets, leafsize=32).query(points, k=1)[0].astype(np.float32)


def _spacing(spacing: Spacing | None, ndim: int) -> list[float]:
    if spacing is None:
        return [1.0] * ndim
    values = [float(v) for v in spacing]
    if len(values) != ndim:
        raise InputError(f"a {ndim}-D mask needs {ndim} spacing values, got {spacing}")
    if not all(v > 0 for v in values):
        raise InputError(f"pixel spacing must be positive, got {spacing}")
    return values


def _tolerance(tolerance_mm: float) -> float:
    tolerance = float(tolerance_mm)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise InputError(f"NSD tolerance must be a finite distance >= 0 mm, got {tolerance_mm}")
    return tolerance
