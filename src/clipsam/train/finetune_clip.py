"""Fine-tune a CLIP-family backend on image-caption pairs with DHN-NCE or InfoNCE.

MedCLIP-SAM (Koleilat et al., MICCAI 2024) fine-tunes BiomedCLIP with DHN-NCE; here the last
``vision_blocks`` / ``text_blocks`` transformer blocks of each tower and everything after them
(final norms, projections) are trained with AdamW, everything else stays frozen. Runs are
seeded; the result can be saved in the upstream layout the model was loaded from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipsam.errors import InputError
from clipsam.models.clip.backend import ClipBackend
from clipsam.train.losses import dhn_nce_loss, info_nce_loss

LOSSES = {"dhn_nce": dhn_nce_loss, "info_nce": info_nce_loss}
MIN_BATCH = {"dhn_nce": 3, "info_nce": 2}


@dataclass(frozen=True)
class FinetuneConfig:
    """``temperature`` None keeps the loss function's default (0.6 DHN-NCE, 0.07 InfoNCE)."""

    loss: str = "dhn_nce"
    vision_blocks: int = 2
    text_blocks: int = 2
    epochs: int = 1
    batch_size: int = 16
    lr: float = 1e-5
    weight_decay: float = 0.1
    temperature: float | None = None
    seed: int = 0


def unfreeze_last_blocks(model: ClipBackend, vision: int, text: int) -> list[torch.nn.Parameter]:
    """Freeze the whole model, then unfreeze the last blocks and the heads; return those."""
    if vision < 0 or text < 0 or vision > model.num_layers or text > len(model.text_blocks):
        raise InputError(f"cannot unfreeze {vision} vision / {text} text blocks of "
                         f"{model.num_layers} / {len(model.text_blocks)}")
    model.network.requires_grad_(False)
    modules = [*model.head_modules, *model.vision_blocks[len(model.vision_blocks) - vision:],
               *model.text_blocks[len(model.text_blocks) - text:]]
    for module in modules:
        module.requires_grad_(True)
    return [p for p in model.network.parameters() if p.requires_grad]


def pair_loss(
    model: ClipBackend, images: Sequence[np.ndarray], captions: Sequence[str],
    config: FinetuneConfig,
) -> torch.Tensor:
    """The configured contrastive loss of one batch of (image, caption) pairs."""
    image_emb = F.normalize(model.embed_pixels(model.transform.batch(images)), dim=-1)
    text_emb = F.normalize(model.embed_tokens(list(captions)), dim=-1)
    kwargs = {} if config.temperature is None else {"temperature": config.temperature}
    return LOSSES[config.loss](image_emb, text_emb, **kwargs)


def finetune_clip(
    model: ClipBackend,
    pairs: Sequence[tuple[np.ndarray, str]],
    config: FinetuneConfig = FinetuneConfig(),
    output_dir: str | os.PathLike[str] | None = None,
) -> list[float]:
    """Train ``model`` in place; return the loss of every step. Saves to ``output_dir`` if set.

    The model stays in eval mode (no dropout), so a run is reproducible for a seed.
    """
    if config.loss not in LOSSES:
        raise InputError(f"unknown loss {config.loss!r}; choose one of {', '.join(LOSSES)}")
    smallest = MIN_BATCH[config.loss]
    if len(pairs) < smallest or config.batch_size < smallest:
        raise InputError(f"{config.loss} needs batches of at least {smallest} pairs")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    params = unfreeze_last_blocks(model, config.vision_blocks, config.text_blocks)
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    losses = []
    try:
        with torch.enable_grad():
            for _ in range(config.epochs):
                order = rng.permutation(len(pairs))
                for start in range(0, len(order), config.batch_size):
                    batch = [pairs[i] for i in order[start:start + config.batch_size]]
                    if len(batch) < smallest:
                        continue
                    loss = pair_loss(model, [p[0] for p in batch], [p[1] for p in batch], config)
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    losses.append(float(loss.detach()))
    finally:
        model.network.requires_grad_(False)
        for param in params:
            param.grad = None
    if output_dir is not None:
        model.save(Path(output_dir))
    return losses
