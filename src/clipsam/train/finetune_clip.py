"""Fine-tune a CLIP-family backend on image-caption pairs with DHN-NCE or InfoNCE.

MedCLIP-SAM (Koleilat et al., MICCAI 2024) fine-tunes BiomedCLIP with DHN-NCE; here the last
``vision_blocks`` / ``text_blocks`` transformer blocks of each tower and everything after them
(final norms, projections) are trained with AdamW, everything else stays frozen. Runs are
seeded; the result can be saved in the upstream layout the model was loaded from.

Each pair belongs to a *group* (what it shows: a set's target, or a caption): two pairs of one
group never share a batch, since in a contrastive batch each would be the other's false
negative. Held-out pairs, if given, are scored before training and after every epoch: their
contrastive loss (same batching) and image-to-text retrieval accuracy (an image is right when
its most similar held-out caption is of its own group). When the held-out loss does not fall by
:data:`MIN_GAIN` of its starting value, the run says the model did not learn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipsam.errors import InputError
from clipsam.models.clip.backend import ClipBackend
from clipsam.train.losses import dhn_nce_loss, info_nce_loss

LOSSES = {"dhn_nce": dhn_nce_loss, "info_nce": info_nce_loss}
MIN_BATCH = {"dhn_nce": 3, "info_nce": 2}
MIN_GAIN = 0.01
"""The held-out loss must fall by this fraction of its value before training, else a warning."""

Pairs = Sequence[tuple[np.ndarray, str]]


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


@dataclass(frozen=True)
class FinetuneRun:
    """What a run did: the loss of every step, the held-out figures before training (epoch 0)
    and after each epoch, and the warnings (also printed)."""

    losses: list[float]
    curve: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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


def group_batches(groups: Sequence[str], order: Sequence[int], size: int) -> list[list[int]]:
    """Batches of at most ``size`` indices taken in ``order``, none holding two indices of one
    group: each index goes to the first open batch without its group, else starts one."""
    batches: list[list[int]] = []
    members: list[set[str]] = []
    open_batches: list[int] = []
    for index in order:
        group = groups[index]
        slot = next((b for b in open_batches if group not in members[b]), None)
        if slot is None:
            slot = len(batches)
            batches.append([])
            members.append(set())
            open_batches.append(slot)
        batches[slot].append(int(index))
        members[slot].add(group)
        if len(batches[slot]) == size:
            open_batches.remove(slot)
    return batches


def _groups_of(pairs: Pairs, groups: Sequence[str] | None) -> list[str]:
    if groups is None:
        return [caption for _, caption in pairs]
    if len(groups) != len(pairs):
        raise InputError(f"{len(groups)} groups for {len(pairs)} pairs")
    return list(groups)


def heldout_scores(
    model: ClipBackend, pairs: Pairs, groups: Sequence[str], config: FinetuneConfig,
) -> dict:
    """Held-out figures: the mean contrastive loss over group-distinct batches (fixed by the
    seed; None when no batch is big enough) and the image-to-text retrieval accuracy among the
    distinct (caption, group) pairs (None with fewer than two groups)."""
    order = np.random.default_rng(config.seed).permutation(len(pairs))
    batches = [b for b in group_batches(groups, order, config.batch_size)
               if len(b) >= MIN_BATCH[config.loss]]
    total, counted = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            loss = pair_loss(model, [pairs[i][0] for i in batch], [pairs[i][1] for i in batch],
                             config)
            total += float(loss) * len(batch)
            counted += len(batch)
    candidates = list(dict.fromkeys((caption, groups[i]) for i, (_, caption) in enumerate(pairs)))
    accuracy = None
    if len({g for _, g in candidates}) >= 2:
        images = model.encode_images([image for image, _ in pairs])
        texts = model.encode_text([caption for caption, _ in candidates])
        best = np.argmax(images @ texts.T, axis=1)
        accuracy = float(np.mean([candidates[b][1] == g for b, g in zip(best, groups,
                                                                          strict=True)]))
    return {"loss": total / counted if counted else None, "retrieval_accuracy": accuracy,
            "pairs": len(pairs), "captions": len(candidates)}


def learning_warnings(curve: list[dict]) -> list[str]:
    """"Did not learn" when the held-out loss fell by less than :data:`MIN_GAIN` of its
    starting value; a note when the retrieval accuracy fell."""
    held = [point["validation"] for point in curve if "validation" in point]
    if len(held) < 2 or held[0]["loss"] is None:
        return ["no held-out batch to score: cannot tell whether the model learned"]
    warnings = []
    before, after = held[0]["loss"], held[-1]["loss"]
    if before - after < MIN_GAIN * abs(before):
        warnings.append(f"the model did not learn: the held-out loss went from {before:.4f} to "
                        f"{after:.4f} (needs a fall of at least {MIN_GAIN:.0%})")
    first, last = held[0]["retrieval_accuracy"], held[-1]["retrieval_accuracy"]
    if first is not None and last is not None and last < first:
        warnings.append(f"the held-out retrieval accuracy fell from {first:.3f} to {last:.3f}")
    return warnings


def finetune_clip(
    model: ClipBackend,
    pairs: Pairs,
    config: FinetuneConfig = FinetuneConfig(),
    output_dir: str | os.PathLike[str] | None = None,
    groups: Sequence[str] | None = None,
    validation: Pairs | None = None,
    validation_groups: Sequence[str] | None = None,
    progress: bool = False,
) -> FinetuneRun:
    """Train ``model`` in place on ``pairs`` and save it to ``output_dir`` if set.

    ``groups`` (default: the captions) keep pairs that show the same thing out of one batch;
    ``validation`` pairs (grouped likewise) are scored before training and after each epoch.
    The model stays in eval mode (no dropout), so a run is reproducible for a seed.
    """
    if config.loss not in LOSSES:
        raise InputError(f"unknown loss {config.loss!r}; choose one of {', '.join(LOSSES)}")
    smallest = MIN_BATCH[config.loss]
    groups = _groups_of(pairs, groups)
    if len(set(groups)) < smallest or config.batch_size < smallest:
        raise InputError(f"{config.loss} needs batches of at least {smallest} pairs of different "
                         f"targets or captions; got {len(set(groups))} different in "
                         f"{len(pairs)} pairs, batch size {config.batch_size}")
    held_groups = _groups_of(validation, validation_groups) if validation else []
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    curve: list[dict] = []
    if validation:
        curve.append({"epoch": 0, "validation": heldout_scores(model, validation, held_groups,
                                                               config)})
    params = unfreeze_last_blocks(model, config.vision_blocks, config.text_blocks)
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    losses: list[float] = []
    try:
        for epoch in range(config.epochs):
            batches = [b for b in group_batches(groups, rng.permutation(len(pairs)),
                                                config.batch_size) if len(b) >= smallest]
            epoch_losses = []
            with torch.enable_grad():
                for batch in batches:
                    loss = pair_loss(model, [pairs[i][0] for i in batch],
                                     [pairs[i][1] for i in batch], config)
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    epoch_losses.append(float(loss.detach()))
            losses += epoch_losses
            point: dict = {"epoch": epoch + 1, "train_loss": float(np.mean(epoch_losses)),
                           "steps": len(batches), "pairs": sum(map(len, batches))}
            if validation:
                point["validation"] = heldout_scores(model, validation, held_groups, config)
            curve.append(point)
            if progress:
                print(_curve_line(point), flush=True)
    finally:
        model.network.requires_grad_(False)
        for param in params:
            param.grad = None
    warnings = learning_warnings(curve)
    for warning in warnings:
        print(f"warning: {warning}", flush=True)
    if output_dir is not None:
        model.save(Path(output_dir))
    return FinetuneRun(losses, curve, warnings)


def _curve_line(point: dict) -> str:
    text = (f"epoch {point['epoch']}: train loss {point['train_loss']:.4f} "
            f"({point['steps']} steps)")
    held = point.get("validation")
    if held and held["loss"] is not None:
        text += f"; held-out loss {held['loss']:.4f}"
    if held and held["retrieval_accuracy"] is not None:
        text += f", retrieval accuracy {held['retrieval_accuracy']:.3f}"
    return text
