"""Pieces every text-saliency method shares: the text target, the model input, the map's grid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clipsam.errors import InputError
from clipsam.models.image_text import SaliencyCapable


def text_target(model: SaliencyCapable, texts: str | Sequence[str]) -> torch.Tensor:
    """(1, D) unit target: the mean of the prompts' text embeddings (a prompt ensemble)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise InputError("saliency needs at least one text prompt")
    return F.normalize(model.text_features(texts).mean(dim=0, keepdim=True), dim=-1)


def squash_to_square(image: np.ndarray) -> np.ndarray:
    """The whole image resized (bilinear, per channel) to a square of its longer side.

    CLIP's own preprocessing centre-crops; saliency must cover every pixel, so the image is
    squashed instead, and the map is stretched back the same way.
    """
    array = np.asarray(image)
    if array.ndim not in (2, 3) or array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"expected an (H, W) or (H, W, C) image, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    side = max(array.shape[:2])
    if array.shape[0] == array.shape[1]:
        return array
    channels = array[..., None] if array.ndim == 2 else array
    out = np.stack([np.asarray(Image.fromarray(channels[..., c].astype(np.float32), mode="F")
                               .resize((side, side), Image.Resampling.BILINEAR))
                    for c in range(channels.shape[2])], axis=2)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        out = np.clip(np.rint(out), info.min, info.max).astype(array.dtype)
    return out[..., 0] if array.ndim == 2 else out


def model_input(model: SaliencyCapable, image: np.ndarray) -> torch.Tensor:
    """(1, 3, S, S) pixels covering the whole image."""
    return model.preprocess(squash_to_square(image))


def block_index(model: SaliencyCapable, layer: int) -> int:
    """``layer`` as a non-negative vision block index (negative counts from the end)."""
    if not -model.num_layers <= layer < model.num_layers:
        raise InputError(f"vision layer {layer} out of range for {model.num_layers} blocks")
    return layer % model.num_layers


def capture_block(
    model: SaliencyCapable, pixels: torch.Tensor, layer: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image embedding, block output) where the block output is a leaf that takes gradients."""
    captured: list[torch.Tensor] = []

    def hook(hidden: torch.Tensor) -> torch.Tensor:
        leaf = hidden.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf

    with torch.enable_grad():
        embedding = model.image_features(pixels, layer=block_index(model, layer), hook=hook)
    return embedding, captured[0]


def patch_maps(hidden: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) channel maps from a (1, 1 + h*w, C) block output (CLS token dropped)."""
    h, w = grid
    if hidden.shape[1] != 1 + h * w:
        raise InputError(f"block output has {hidden.shape[1]} tokens, expected 1 + {h}x{w}")
    return hidden[0, 1:].T.reshape(-1, h, w)


def to_image_size(grid_map: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """A (h, w) map stretched (bilinear) to the image's (H, W), as raw float32."""
    resized = F.interpolate(grid_map[None, None].detach().float(), size=tuple(shape[:2]),
                            mode="bilinear", align_corners=False)
    return resized[0, 0].numpy().astype(np.float32)
