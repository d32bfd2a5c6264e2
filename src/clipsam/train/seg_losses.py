"""Per-pixel weighted segmentation loss for training on pseudo-masks.

Binary cross-entropy plus soft Dice, both weighted pixel by pixel, Dice pooled over the whole
batch (so all-background targets are well defined, as MONAI's ``DiceCELoss(batch=True)``). With
all weights 1 it equals MONAI's ``DiceCELoss(sigmoid=True, batch=True)`` up to its smoothing
constants (tested). A weight of 0 removes a pixel from both terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH = 1e-5


def weighted_dice_bce(logits: torch.Tensor, targets: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """Scalar loss for (N, 1, H, W) logits, {0, 1} targets and non-negative weights."""
    if not logits.shape == targets.shape == weights.shape:
        raise ValueError(f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)} and "
                         f"weights {tuple(weights.shape)} must have one shape")
    total = weights.sum().clamp_min(SMOOTH)
    bce = (F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
           * weights).sum() / total
    probs = torch.sigmoid(logits)
    overlap = (weights * probs * targets).sum()
    sizes = (weights * probs).sum() + (weights * targets).sum()
    dice = 1.0 - (2.0 * overlap + SMOOTH) / (sizes + SMOOTH)
    return bce + dice
