"""Teach the grounding model a new target from a few labelled images, in seconds.

The heads stay frozen (so built-in concepts are untouched); only one concept vector in the
shared space is learned for the new prompt, starting from the prompt's projected text
embedding, by the same dense loss as training (per-cell BCE against mask fractions + Dice).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipsam.errors import InputError
from clipsam.io.image import segmenter_input
from clipsam.io.masks import read_mask
from clipsam.io.read import read_image
from clipsam.models.grounding.grid import mask_to_grid, valid_mask
from clipsam.models.grounding.model import GroundingModel, concept_key
from clipsam.models.segmenter import ImageEmbedding
from clipsam.train.regions import Sample, list_samples


def learn_concept(
    model: GroundingModel,
    embeddings: Sequence[ImageEmbedding],
    masks: Sequence[np.ndarray],
    prompt: str,
    steps: int = 200,
    learning_rate: float = 0.05,
) -> np.ndarray:
    """(D,) unit concept vector that grounds ``prompt`` on the labelled images."""
    if not embeddings or len(embeddings) != len(masks):
        raise InputError("adaptation needs at least one image and one mask per image")
    patches = torch.stack([model.patch_embeddings(e).clone() for e in embeddings])
    grid = patches.shape[-1]
    targets = torch.from_numpy(np.stack([mask_to_grid(m, e.geometry, grid)
                                         for m, e in zip(masks, embeddings, strict=True)]))
    valid = torch.from_numpy(np.stack([valid_mask(e.geometry, grid) for e in embeddings]))
    weight = valid.float()
    scale = model.heads.log_scale.detach().exp()
    bias = model.heads.bias.detach()
    vector = torch.nn.Parameter(torch.from_numpy(model.text_vector(prompt).copy()))
    optimiser = torch.optim.Adam([vector], lr=learning_rate)
    for _ in range(steps):
        unit = F.normalize(vector, dim=0)
        logits = scale * torch.einsum("ndhw,d->nhw", patches, unit) + bias
        loss = F.binary_cross_entropy_with_logits(logits, targets, weight=weight,
                                                  reduction="sum") / weight.sum()
        prob = torch.sigmoid(logits) * weight
        inter = (prob * targets).sum()
        loss = loss + 1 - (2 * inter + 1) / (prob.sum() + (targets * weight).sum() + 1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return F.normalize(vector.detach(), dim=0).numpy().astype(np.float32)


def with_concept(model: GroundingModel, prompt: str, vector: np.ndarray) -> GroundingModel:
    """A copy of ``model`` (same heads) that grounds ``prompt`` with ``vector``."""
    concepts = {**model.concepts, concept_key(prompt): vector}
    metadata = {**model.metadata,
                "adapted": sorted({*model.metadata.get("adapted", []), concept_key(prompt)})}
    return GroundingModel(model.heads, model.presence, concepts, model.concept_thresholds,
                          model._text_encoder, model._segmenter, metadata)


def pick_shots(samples: Sequence[Sample], shots: int, seed: int = 0) -> list[Sample]:
    """``shots`` samples with a non-empty mask, chosen reproducibly by ``seed``."""
    labelled = [s for s in samples if read_mask(s.mask_path).any()]
    if len(labelled) < shots:
        raise InputError(f"asked for {shots} labelled images, only {len(labelled)} have a "
                         f"non-empty mask")
    order = np.random.default_rng(seed).permutation(len(labelled))[:shots]
    return [labelled[i] for i in sorted(order)]


def adapt_from_folder(
    model: GroundingModel, folder: Path, prompt: str, shots: int = 5, seed: int = 0
) -> tuple[GroundingModel, list[Sample]]:
    """Encode ``shots`` labelled images of a set folder and learn ``prompt`` from them."""
    chosen = pick_shots(list_samples(Path(folder)), shots, seed)
    embeddings = [model.segmenter.encode(segmenter_input(read_image(s.image_path)))
                  for s in chosen]
    masks = [read_mask(s.mask_path) for s in chosen]
    return with_concept(model, prompt, learn_concept(model, embeddings, masks, prompt)), chosen
