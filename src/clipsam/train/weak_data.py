"""How images and masks are turned into the weak-supervision network's fixed-size input.

Every image is resized (plainly, not letterboxed: the whole input grid carries image content)
to ``size`` x ``size`` with antialiased bilinear interpolation, then each image is standardised
to zero mean and unit variance on its own (as nnU-Net does for non-CT images), so the network
never depends on a modality's numeric range. Colour images keep 3 channels when the network was
trained on colour; a gray image given to a colour network repeats its channel, and a colour
image given to a gray network is averaged to one channel. Probabilities go back to the original
size with bilinear interpolation.
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


def _channels_first(image: np.ndarray, channels: int) -> np.ndarray:
    """(C, H, W) float32 with ``channels`` channels from (H, W) or (H, W, C)."""
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 3 and pixels.shape[-1] in (1, 3, 4):
        pixels = pixels[..., :3] if pixels.shape[-1] != 1 else pixels[..., 0]
    if pixels.ndim == 2:
        pixels = pixels[None]
    elif pixels.ndim == 3:
        pixels = np.moveaxis(pixels, -1, 0)
    else:
        raise InputError(f"expected a 2-D image (H, W) or (H, W, C), got shape {image.shape}")
    if not np.isfinite(pixels).all():
        finite = np.isfinite(pixels)
        if not finite.any():
            raise InputError("image has no finite pixel values")
        pixels = np.where(finite, pixels, pixels[finite].min())
    if channels == 1 and pixels.shape[0] != 1:
        pixels = pixels.mean(axis=0, keepdims=True)
    elif channels == 3 and pixels.shape[0] == 1:
        pixels = np.repeat(pixels, 3, axis=0)
    return pixels


def network_input(image: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """(channels, size, size) float32 tensor: resized, then standardised per image."""
    pixels = torch.from_numpy(_channels_first(image, channels))
    resized = F.interpolate(pixels[None], size=(size, size), mode="bilinear",
                            align_corners=False, antialias=True)[0]
    std = resized.std()
    return (resized - resized.mean()) / (std if std > 1e-6 else 1.0)


def network_target(mask: np.ndarray, size: int) -> torch.Tensor:
    """(1, size, size) float32 {0, 1} target from an (H, W) mask of any dtype (nonzero = target)."""
    if mask.ndim != 2:
        raise InputError(f"expected a 2-D mask, got shape {mask.shape}")
    target = torch.from_numpy((np.asarray(mask) > 0).astype(np.float32))
    resized = F.interpolate(target[None, None], size=(size, size), mode="bilinear",
                            align_corners=False, antialias=True)[0]
    return (resized >= 0.5).float()


def to_original_size(maps: torch.Tensor, original_size: tuple[int, int]) -> np.ndarray:
    """(N, H, W) float32 array from (N, s, s) maps, bilinearly resized to ``original_size``."""
    resized = F.interpolate(maps[:, None].float(), size=original_size, mode="bilinear",
                            align_corners=False)
    return resized[:, 0].numpy().astype(np.float32)
