"""gScoreCAM (Chen et al., "gScoreCAM: What objects is CLIP looking at?", ACCV 2022).

The saliency method of MedCLIP-SAM v1 (Koleilat et al., MICCAI 2024). Score-CAM scores every
activation channel by how well the image masked with that channel matches the text; gScoreCAM
scores only the ``top_k`` channels with the largest average gradient (300 in the paper).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clipsam.models.image_text import SaliencyCapable
from clipsam.saliency.common import (
    capture_block,
    model_input,
    patch_maps,
    text_target,
    to_image_size,
)


@dataclass(frozen=True)
class GScoreCamConfig:
    """``top_k`` channels scored in batches of ``batch_size``; scores are cosine similarities
    times ``logit_scale`` (CLIP's 100) before the softmax over channels."""

    layer: int = -2
    top_k: int = 300
    batch_size: int = 32
    logit_scale: float = 100.0


def gscorecam(
    model: SaliencyCapable, image: np.ndarray, texts: str | Sequence[str],
    config: GScoreCamConfig = GScoreCamConfig(),
) -> np.ndarray:
    """(H, W) float32 gScoreCAM map of ``texts`` on ``image``."""
    target = text_target(model, texts)
    pixels = model_input(model, image)
    embedding, hidden = capture_block(model, pixels, config.layer)
    (gradient,) = torch.autograd.grad((embedding * target).sum(), hidden)
    activations = patch_maps(hidden.detach(), model.patch_grid)
    ranking = patch_maps(gradient, model.patch_grid).mean(dim=(1, 2))
    channels = torch.topk(ranking, k=min(config.top_k, ranking.numel())).indices
    chosen = activations[channels]
    masks = F.interpolate(chosen[:, None], size=pixels.shape[-2:], mode="bilinear",
                          align_corners=False)[:, 0]
    low = masks.amin(dim=(1, 2), keepdim=True)
    span = masks.amax(dim=(1, 2), keepdim=True) - low
    masks = torch.where(span > 0, (masks - low) / span.clamp_min(1e-12), torch.zeros_like(masks))
    scores = []
    with torch.no_grad():
        for start in range(0, len(masks), config.batch_size):
            batch = pixels * masks[start:start + config.batch_size, None]
            scores.append(model.image_features(batch) @ target[0])
    weights = torch.softmax(config.logit_scale * torch.cat(scores), dim=0)
    cam = torch.relu(torch.einsum("k,khw->hw", weights, chosen))
    return to_image_size(cam, np.shape(image))
