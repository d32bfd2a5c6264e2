"""Training the grounding heads on region data, with per-epoch checkpoints and resume.

Each step takes a batch of images (a random crop of their embedding grid) and every concept's
target and background caption (one random caption each). Two terms:

* dense: per cell and caption, binary cross-entropy of ``sigmoid(scale * cos + bias)`` against
  the soft target (mask fraction for the image's own target caption, the rest of the image for
  its own background caption, 0 for other concepts), plus soft Dice on the own-target map;
* contrastive (``loss="dhn-nce"`` or ``"info-nce"``): patches drawn one per (concept, role)
  present in the batch, paired with their captions.

After training, the presence threshold is fitted on a calibration part of the training
images held out from the gradient steps (see :func:`calibrate_presence`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from clipsam.io.atomic import write_atomic
from clipsam.models.grounding.heads import GroundingHeads, HeadsConfig
from clipsam.models.grounding.model import GroundingModel, PresenceRule
from clipsam.models.grounding.text_encoder import SentenceEncoder
from clipsam.train.losses import dhn_nce_loss, info_nce_loss
from clipsam.train.region_data import RegionData

CHECKPOINT = "checkpoint.pt"
LOSSES = ("dhn-nce", "info-nce")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; ``temperature`` None uses the loss's default (0.6 / 0.07)."""

    epochs: int = 12
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    loss: str = "dhn-nce"
    temperature: float | None = None
    contrastive_weight: float = 0.5
    contrastive_draws: int = 8
    crop: int = 48
    top_k: int = 4
    seed: int = 0


def contrastive_loss(config: TrainConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if config.loss not in LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}: use one of {', '.join(LOSSES)}")
    if config.loss == "dhn-nce":
        t = 0.6 if config.temperature is None else config.temperature
        return lambda v, w: dhn_nce_loss(v, w, temperature=t)
    t = 0.07 if config.temperature is None else config.temperature
    return lambda v, w: info_nce_loss(v, w, temperature=t)


def _crop_origin(valid: np.ndarray, crop: int, rng: np.random.Generator) -> tuple[int, int]:
    rows, cols = int(valid.any(axis=1).sum()), int(valid.any(axis=0).sum())
    return (int(rng.integers(0, max(rows - crop, 0) + 1)),
            int(rng.integers(0, max(cols - crop, 0) + 1)))


def _batch(data: RegionData, index: np.ndarray, crop: int, rng: np.random.Generator):
    grid = data.targets.shape[-1]
    crop = min(crop, grid)
    feats, targets, valid = [], [], []
    for i in index:
        y, x = _crop_origin(data.valid[i], crop, rng)
        feats.append(np.asarray(data.features[i][:, y:y + crop, x:x + crop], np.float32))
        targets.append(data.targets[i, y:y + crop, x:x + crop])
        valid.append(data.valid[i, y:y + crop, x:x + crop])
    return (torch.from_numpy(np.stack(feats)), torch.from_numpy(np.stack(targets)),
            torch.from_numpy(np.stack(valid)))


def _dense_targets(targets: torch.Tensor, valid: torch.Tensor, concept: torch.Tensor,
                   num_concepts: int) -> torch.Tensor:
    """(B, 2C, h, w): channel 2c is concept c's target, 2c+1 its background."""
    out = torch.zeros(targets.shape[0], 2 * num_concepts, *targets.shape[1:])
    rows = torch.arange(targets.shape[0])
    out[rows, 2 * concept] = targets * valid
    out[rows, 2 * concept + 1] = (1 - targets) * valid
    return out


def _contrastive_pairs(patches: torch.Tensor, dense: torch.Tensor, valid: torch.Tensor,
                       texts: torch.Tensor, draws: int, rng: np.random.Generator):
    """(draws, K, D) patches, one random clear cell per caption channel present in the batch,
    and the (K, D) captions they pair with; None when fewer than 3 channels are present."""
    picked, channels = [], []
    for channel in range(dense.shape[1]):
        cells = ((dense[:, channel] > 0.9) & valid).nonzero()
        if len(cells):
            b, y, x = cells[torch.from_numpy(rng.integers(len(cells), size=draws))].T
            picked.append(patches[b, :, y, x])
            channels.append(channel)
    if len(channels) < 3:
        return None
    return torch.stack(picked, dim=1), texts[channels]


def _soft_dice(prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    prob, target = prob * valid, target * valid
    inter = (prob * target).sum(dim=(1, 2))
    return 1 - ((2 * inter + 1) / (prob.sum(dim=(1, 2)) + target.sum(dim=(1, 2)) + 1)).mean()


def _caption_tensors(data: RegionData, encoder: SentenceEncoder):
    pools = data.caption_pools()
    flat = [c for target, background in pools for c in (*target, *background)]
    vectors = torch.from_numpy(encoder(flat))
    lookup, start = [], 0
    for target, background in pools:
        lookup.append((vectors[start:start + len(target)],
                       vectors[start + len(target):start + len(target) + len(background)]))
        start += len(target) + len(background)
    return lookup


def train_heads(
    data: RegionData,
    config: TrainConfig,
    out_dir: Path | None = None,
    encoder: SentenceEncoder | None = None,
    heads_config: HeadsConfig | None = None,
    progress: bool = True,
) -> GroundingHeads:
    """Train heads on ``data``; with ``out_dir``, checkpoint every epoch and resume from it."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    encoder = encoder or SentenceEncoder()
    captions = _caption_tensors(data, encoder)
    heads = GroundingHeads(heads_config)
    optimiser = torch.optim.AdamW(heads.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(data) / config.batch_size)))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch,
        pct_start=0.1)
    start_epoch = 0
    checkpoint = Path(out_dir) / CHECKPOINT if out_dir else None
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        if state["config"] == asdict(config) and state["num_images"] == len(data):
            heads.load_state_dict(state["heads"])
            optimiser.load_state_dict(state["optimiser"])
            schedule.load_state_dict(state["schedule"])
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            start_epoch = state["epoch"]
    contrast = contrastive_loss(config)
    concept = torch.from_numpy(data.concept_index)
    num_concepts = len(data.concepts)
    heads.train()
    for epoch in range(start_epoch, config.epochs):
        order = rng.permutation(len(data))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, leave=False)
        for step in bar:
            index = order[step * config.batch_size:(step + 1) * config.batch_size]
            feats, targets, valid = _batch(data, index, config.crop, rng)
            dense = _dense_targets(targets, valid, concept[index], num_concepts)
            texts = torch.stack([pool[int(rng.integers(len(pool)))]
                                 for target, background in captions
                                 for pool in (target, background)])
            patches = heads.patch(feats)
            projected = heads.text(texts)
            logits = heads.logits(patches, projected)
            weight = valid[:, None].expand_as(logits).float()
            loss = F.binary_cross_entropy_with_logits(logits, dense, weight=weight,
                                                      reduction="sum") / weight.sum()
            own = logits[torch.arange(len(index)), 2 * concept[index]]
            has = targets.flatten(1).amax(dim=1) > 0
            if has.any():
                loss = loss + _soft_dice(torch.sigmoid(own[has]), targets[has], valid[has])
            if config.contrastive_weight > 0:
                pairs = _contrastive_pairs(patches, dense, valid, projected,
                                           config.contrastive_draws, rng)
                if pairs is not None:
                    terms = torch.stack([contrast(drawn, pairs[1]) for drawn in pairs[0]])
                    loss = loss + config.contrastive_weight * terms.mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if checkpoint is not None:
            state = {"config": asdict(config), "num_images": len(data), "epoch": epoch + 1,
                     "heads": heads.state_dict(), "optimiser": optimiser.state_dict(),
                     "schedule": schedule.state_dict(), "rng": rng.bit_generator.state,
                     "torch_rng": torch.get_rng_state()}
            write_atomic(checkpoint, lambda p, s=state: torch.save(s, p))
    return heads.eval()


def presence_scores(model: GroundingModel, data: RegionData) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) presence score of every image for every concept's target name, and (N, C) bool
    labels (True where the concept is the image's own and its mask is not empty)."""
    names = [c.target for c in data.concepts]
    scores = np.zeros((len(data), len(names)), np.float32)
    for i in range(len(data)):
        embedding = data.embedding(i)
        scores[i] = [model.presence_score(embedding, name) for name in names]
    labels = np.zeros_like(scores, dtype=bool)
    labels[np.arange(len(data)), data.concept_index] = data.has_target()
    return scores, labels


def calibrate_presence(scores: np.ndarray, labels: np.ndarray, own: np.ndarray) -> float:
    """The threshold with the best balanced accuracy.

    Negatives are of two kinds, weighted equally: the image's own target when its mask is empty
    (if any such image), and other concepts' targets. ``own`` marks (N, C) own-concept cells.
    """
    groups = [scores[labels]]
    negatives = [scores[own & ~labels], scores[~own & ~labels]]
    negatives = [n for n in negatives if n.size]
    if not groups[0].size or not negatives:
        return 0.5
    candidates = np.unique(np.concatenate([scores.ravel(), [0.5]]))
    best, best_value = 0.5, -1.0
    for t in candidates:
        tpr = float((groups[0] >= t).mean())
        tnr = float(np.mean([(n < t).mean() for n in negatives]))
        value = 0.5 * (tpr + tnr)
        if value > best_value:
            best, best_value = float(t), value
    return best


def fit_grounding_model(
    train: RegionData,
    calibration: RegionData | None,
    config: TrainConfig,
    out_dir: Path | None = None,
    encoder: SentenceEncoder | None = None,
    metadata: dict | None = None,
    progress: bool = True,
    heads_config: HeadsConfig | None = None,
) -> GroundingModel:
    """Train heads, fit the presence threshold (on ``calibration``, else on ``train``), and
    save the model folder to ``out_dir`` when given."""
    encoder = encoder or SentenceEncoder()
    heads = train_heads(train, config, out_dir, encoder, heads_config, progress)
    model = GroundingModel(heads, PresenceRule(top_k=config.top_k), text_encoder=encoder)
    held = calibration if calibration is not None and len(calibration) else train
    scores, labels = presence_scores(model, held)
    own = np.zeros_like(labels)
    own[np.arange(len(held)), held.concept_index] = True
    threshold = calibrate_presence(scores, labels, own)
    info = {"training": asdict(config), "concepts": [c.target for c in train.concepts],
            "train_images": len(train), "calibration_images": len(held),
            **(metadata or {})}
    model = GroundingModel(heads, PresenceRule(config.top_k, threshold), text_encoder=encoder,
                           metadata=info)
    if out_dir is not None:
        model.save(Path(out_dir))
        (Path(out_dir) / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    return model
