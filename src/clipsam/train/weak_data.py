"""Training data for the weak-supervision network: mask targets at the network's input size.

Images are turned into the network's input by :func:`clipsam.models.weak_net.network_input`
(plain resize, per-image standardisation); masks are resized the same way and thresholded at
0.5. :func:`is_colour` decides whether a network is trained on 3 channels or 1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from clipsam.errors import InputError


def is_colour(image: np.ndarray) -> bool:
    """Whether an (H, W) or (H, W, C) image has colour (channels that differ)."""
    if image.ndim == 2:
        return False
    rgb = image[..., :3]
    return bool(rgb.shape[-1] > 1 and not (np.all(rgb == rgb[..., :1])))


def network_target(mask: np.ndarray, size: int) -> torch.Tensor:
    """(1, size, size) float32 {0, 1} target from an (H, W) mask of any dtype (nonzero = target)."""
    if mask.ndim != 2:
        raise InputError(f"expected a 2-D mask, got shape {mask.shape}")
    target = torch.from_numpy((np.asarray(mask) > 0).astype(np.float32))
    resized = F.interpolate(target[None, None], size=(size, size), mode="bilinear",
                            align_corners=False, antialias=True)[0]
    return (resized >= 0.5).float()
