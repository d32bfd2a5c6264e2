"""Grad-CAM (Selvaraju et al., ICCV 2017) on a ViT block's patch tokens.

Channel weights are the patch-averaged gradients of the image-text cosine similarity with
respect to the block output; the map is the ReLU of the weighted channel sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clipsam.models.image_text import SaliencyCapable
from clipsam.saliency.common import (
    capture_block,
    model_input,
    patch_maps,
    text_target,
    to_image_size,
)


@dataclass(frozen=True)
class GradCamConfig:
    """``layer``: vision block whose output is explained. The default, the second-to-last
    block, is the last whose patch tokens still reach the CLS embedding."""

    layer: int = -2


def gradcam(
    model: SaliencyCapable, image: np.ndarray, texts: str | Sequence[str],
    config: GradCamConfig = GradCamConfig(),
) -> np.ndarray:
    """(H, W) float32 Grad-CAM map of ``texts`` on ``image``."""
    target = text_target(model, texts)
    embedding, hidden = capture_block(model, model_input(model, image), config.layer)
    (gradient,) = torch.autograd.grad((embedding * target).sum(), hidden)
    activations = patch_maps(hidden.detach(), model.patch_grid)
    weights = patch_maps(gradient, model.patch_grid).mean(dim=(1, 2))
    cam = torch.relu(torch.einsum("c,chw->hw", weights, activations))
    return to_image_size(cam, np.shape(image))
