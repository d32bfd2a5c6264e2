"""M2IB: multi-modal information bottleneck attribution (Wang et al., NeurIPS 2023).

The saliency method of MedCLIP-SAM v2 (Koleilat et al.). Noise is injected into the output of
vision block ``layer``: Z = lam * R + (1 - lam) * eps with a learned lam = sigmoid(alpha) per
token and channel, R standardised per channel over the image's tokens and eps ~ N(0, 1). alpha
minimises ``beta * KL(P(Z|R) || N(0, 1)) - cos(image(Z), text)`` for a fixed number of Adam
steps; the map is the KL (information kept) summed over channels at each patch. Defaults follow
the papers: layer 9, beta 0.1, 10 steps, learning rate 1, alpha initialised to 5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clipsam.models.image_text import SaliencyCapable
from clipsam.saliency.common import (
    block_index,
    capture_block,
    model_input,
    patch_maps,
    text_target,
    to_image_size,
)


@dataclass(frozen=True)
class M2ibConfig:
    layer: int = 9
    beta: float = 0.1
    steps: int = 10
    lr: float = 1.0
    init_alpha: float = 5.0
    seed: int = 0


def gaussian_kl(lam: torch.Tensor, standardised: torch.Tensor) -> torch.Tensor:
    """Elementwise KL( N(lam * r, (1 - lam)^2) || N(0, 1) )."""
    keep = 1.0 - lam
    return 0.5 * (lam.square() * standardised.square() + keep.square() - 1.0) - torch.log(keep)


def m2ib(
    model: SaliencyCapable, image: np.ndarray, texts: str | Sequence[str],
    config: M2ibConfig = M2ibConfig(),
) -> np.ndarray:
    """(H, W) float32 M2IB map of ``texts`` on ``image`` (deterministic for a given seed)."""
    target = text_target(model, texts)
    pixels = model_input(model, image)
    layer = block_index(model, config.layer)
    _, hidden = capture_block(model, pixels, layer)
    features = hidden.detach()
    mean = features.mean(dim=1, keepdim=True)
    std = features.std(dim=1, keepdim=True).clamp_min(1e-6)
    standardised = (features - mean) / std
    alpha = torch.full_like(features, config.init_alpha, requires_grad=True)
    optimiser = torch.optim.Adam([alpha], lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    with torch.enable_grad():
        for _ in range(config.steps):
            lam = torch.sigmoid(alpha).clamp(max=1.0 - 1e-6)
            noise = torch.randn(features.shape, generator=generator)
            bottleneck = (lam * standardised + (1.0 - lam) * noise) * std + mean
            embedding = model.image_features(pixels, layer=layer, hook=lambda _h, z=bottleneck: z)
            fit = (embedding * target).sum()
            loss = config.beta * gaussian_kl(lam, standardised).mean() - fit
            optimiser.zero_grad()
            (alpha.grad,) = torch.autograd.grad(loss, alpha)
            optimiser.step()
    with torch.no_grad():
        lam = torch.sigmoid(alpha).clamp(max=1.0 - 1e-6)
        information = gaussian_kl(lam, standardised)
    saliency = patch_maps(information, model.patch_grid).sum(dim=0)
    return to_image_size(saliency, np.shape(image))
