"""Training the grounding heads on region data, with a validation curve, checkpoints and resume.

Each step draws a batch of images (sets balanced by ``TrainConfig.balance``), optionally a
random crop or flip of their cached embedding grid, and one random target and background
caption of every concept. Three terms:

* dense: per cell and caption, binary cross-entropy of ``sigmoid(scale * cos + bias)`` against
  the soft target (mask fraction for the image's own target caption, the rest of the image for
  its own background caption, 0 for other concepts; concepts that may be or are visible
  unlabelled in the image are left out), plus soft Dice on the own-target map;
* presence: per image and target caption, binary cross-entropy of the presence logit (mean of
  the top-k cell logits, the statistic "not found" is decided on) against "target present"
  (its own target, and the targets it certainly shows without a mask: the lungs on a heart
  X-ray), so "found" is learned on every source that shows a target;
* contrastive (``loss="dhn-nce"`` or ``"info-nce"``): patches drawn one per (concept, role)
  present in the batch, paired with their captions.

After every epoch the heads are scored on a validation part (the calibration subjects, never
used for gradient steps): the curve is kept in the checkpoint and the model's metadata.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from clipsam.eval.metrics import dice
from clipsam.io.atomic import write_atomic
from clipsam.models.grounding.heads import GroundingHeads, HeadsConfig
from clipsam.models.grounding.text_encoder import SentenceEncoder
from clipsam.train.losses import dhn_nce_loss, info_nce_loss
from clipsam.train.region_data import RegionData

CHECKPOINT = "checkpoint.pt"
LOSSES = ("dhn-nce", "info-nce")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; ``temperature`` None uses the loss's default (0.6 / 0.07).

    ``crop``: training window of the embedding grid in cells (64 = the whole grid).
    ``flip``: mirror features and targets left-right at random (feature-level augmentation).
    ``balance``: an image of a set of n images is drawn with weight ``n ** -balance`` (0: by
    image, 1: every set equally often). ``presence_weight``: weight of the presence term;
    ``empty_weight``: extra weight of images whose own target is absent in that term.
    """

    epochs: int = 12
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    loss: str = "dhn-nce"
    temperature: float | None = None
    contrastive_weight: float = 0.5
    contrastive_draws: int = 8
    presence_weight: float = 0.5
    empty_weight: float = 4.0
    crop: int = 64
    flip: bool = False
    balance: float = 0.5
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


def sampling_weights(data: RegionData, balance: float) -> np.ndarray:
    """(N,) probabilities of drawing each image: ``n ** -balance`` where n is the number of
    images of its concept (its set), normalised."""
    counts = np.bincount(data.concept_index)
    weights = counts[data.concept_index].astype(np.float64) ** -balance
    return weights / weights.sum()


def _crop_origin(valid: np.ndarray, crop: int, rng: np.random.Generator) -> tuple[int, int]:
    rows, cols = int(valid.any(axis=1).sum()), int(valid.any(axis=0).sum())
    return (int(rng.integers(0, max(rows - crop, 0) + 1)),
            int(rng.integers(0, max(cols - crop, 0) + 1)))


def _batch(data: RegionData, index: np.ndarray, crop: int, flip: bool,
           rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, C_f, c, c) features, (B, c, c) targets and (B, c, c) valid cells of a batch."""
    grid = data.targets.shape[-1]
    crop = min(crop, grid)
    feats, targets, valid = [], [], []
    for i in index:
        y, x = _crop_origin(data.valid[i], crop, rng) if crop < grid else (0, 0)
        window = (slice(y, y + crop), slice(x, x + crop))
        f = np.asarray(data.features[i][(slice(None), *window)], np.float32)
        t, v = data.targets[i][window], data.valid[i][window]
        if flip and rng.random() < 0.5:
            rows, cols = int(v.any(axis=1).sum()), int(v.any(axis=0).sum())
            f, t = f.copy(), t.copy()
            f[:, :rows, :cols] = f[:, :rows, :cols][:, :, ::-1]
            t[:rows, :cols] = t[:rows, :cols][:, ::-1]
        feats.append(f)
        targets.append(t)
        valid.append(v)
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


def presence_logits(logits: torch.Tensor, valid: torch.Tensor, top_k: int) -> torch.Tensor:
    """(B, T) mean of the ``top_k`` largest valid-cell logits of (B, T, h, w) maps."""
    masked = logits.masked_fill(~valid[:, None], float("-inf")).flatten(2)
    return masked.topk(top_k, dim=2).values.mean(dim=2)


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


def _step_loss(heads: GroundingHeads, data: RegionData, index: np.ndarray,
               feats: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
               texts: torch.Tensor, config: TrainConfig, rng: np.random.Generator,
               contrast: Callable | None) -> torch.Tensor:
    """The training loss of one batch (texts: (2C, 384) one caption per concept and role)."""
    concept = torch.from_numpy(data.concept_index[index])
    known = torch.from_numpy(~data.unknown[index])  # (B, C) presence labels known
    mapped = torch.from_numpy(~data.unmapped()[index])  # (B, C) map targets known
    num_concepts = len(data.concepts)
    dense = _dense_targets(targets, valid, concept, num_concepts)
    patches = heads.patch(feats)
    projected = heads.text(texts)
    logits = heads.logits(patches, projected)
    channel_known = mapped.repeat_interleave(2, dim=1)[:, :, None, None]
    weight = (valid[:, None] & channel_known).float()
    loss = F.binary_cross_entropy_with_logits(logits, dense, weight=weight,
                                              reduction="sum") / weight.sum()
    rows = torch.arange(len(index))
    has = targets.flatten(1).amax(dim=1) > 0
    if has.any():
        own = logits[rows, 2 * concept]
        loss = loss + _soft_dice(torch.sigmoid(own[has]), targets[has], valid[has])
    if config.presence_weight > 0:
        scores = presence_logits(logits[:, 0::2], valid, config.top_k)  # (B, C)
        labels = torch.from_numpy(data.shown[index]).float()
        labels[rows, concept] = has.float()
        w = known.float()
        w[rows[~has], concept[~has]] = config.empty_weight
        loss = loss + config.presence_weight * (
            F.binary_cross_entropy_with_logits(scores, labels, weight=w, reduction="sum")
            / w.sum())
    if contrast is not None:
        pairs = _contrastive_pairs(patches, dense * channel_known, valid, projected,
                                   config.contrastive_draws, rng)
        if pairs is not None:
            terms = torch.stack([contrast(drawn, pairs[1]) for drawn in pairs[0]])
            loss = loss + config.contrastive_weight * terms.mean()
    return loss


@torch.inference_mode()
def validation_scores(heads: GroundingHeads, data: RegionData, texts: torch.Tensor,
                      top_k: int) -> dict:
    """Per set: Dice on the grid of the own-target map at 0.5 against cells at least half
    covered by the mask (images with a target), and the share
    of images whose presence logit is on the right side of 0 (own target and known others)."""
    heads.eval()
    projected = heads.text(texts[0::2])  # each concept's first target caption
    per_set: dict[str, dict[str, list[float]]] = {}
    present, known = data.labels()
    for i in range(len(data)):
        feats = torch.from_numpy(np.array(data.features[i], np.float32))[None]
        valid = torch.from_numpy(data.valid[i])[None]
        logits = heads.logits(heads.patch(feats), projected)
        scores = presence_logits(logits, valid, top_k)[0]
        c = int(data.concept_index[i])
        target = torch.from_numpy(data.targets[i])
        entry = per_set.setdefault(data.samples[i].set_name, {"dice": [], "presence": []})
        if target.max() >= 0.5:
            pred = ((logits[0, c] > 0) & valid[0]).numpy()
            entry["dice"].append(dice(pred, target.numpy() >= 0.5))
        right = (scores > 0).numpy() == present[i]
        entry["presence"].append(float(right[known[i]].mean()))
    return {name: {k: (float(np.mean(v)) if v else None) for k, v in entry.items()}
            for name, entry in sorted(per_set.items())}


def train_heads(
    data: RegionData,
    config: TrainConfig,
    out_dir: Path | None = None,
    encoder: SentenceEncoder | None = None,
    heads_config: HeadsConfig | None = None,
    progress: bool = True,
    validation: RegionData | None = None,
    initial: GroundingHeads | None = None,
) -> tuple[GroundingHeads, list[dict]]:
    """Train heads on ``data`` (from ``initial``'s weights when given, else random); returns
    them and the per-epoch validation curve (empty without ``validation``). With ``out_dir``,
    checkpoint every epoch and resume from it."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    encoder = encoder or SentenceEncoder()
    captions = _caption_tensors(data, encoder)
    heads = GroundingHeads(heads_config)
    if initial is not None:
        heads.load_state_dict(initial.state_dict())
    optimiser = torch.optim.AdamW(heads.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(data) / config.batch_size)))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch,
        pct_start=0.1)
    start_epoch, curve = 0, []
    checkpoint = Path(out_dir) / CHECKPOINT if out_dir else None
    identity = {"config": asdict(config), "heads": asdict(heads.config),
                "num_images": len(data),
                "initial": None if initial is None else _state_digest(initial)}
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        if state.get("identity") == identity:
            heads.load_state_dict(state["heads"])
            optimiser.load_state_dict(state["optimiser"])
            schedule.load_state_dict(state["schedule"])
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            start_epoch, curve = state["epoch"], state["curve"]
    contrast = contrastive_loss(config) if config.contrastive_weight > 0 else None
    weights = sampling_weights(data, config.balance)
    val_texts = (torch.stack([t for target, background in _caption_tensors(validation, encoder)
                              for t in (target[0], background[0])])
                 if validation is not None and len(validation) else None)
    for epoch in range(start_epoch, config.epochs):
        heads.train()
        order = rng.choice(len(data), size=steps_per_epoch * config.batch_size, p=weights)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, leave=False)
        losses = []
        for step in bar:
            index = order[step * config.batch_size:(step + 1) * config.batch_size]
            feats, targets, valid = _batch(data, index, config.crop, config.flip, rng)
            texts = torch.stack([pool[int(rng.integers(len(pool)))]
                                 for target, background in captions
                                 for pool in (target, background)])
            loss = _step_loss(heads, data, index, feats, targets, valid, texts, config, rng,
                              contrast)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.3f}")
        point = {"epoch": epoch + 1, "train_loss": float(np.mean(losses))}
        if val_texts is not None:
            point["validation"] = validation_scores(heads, validation, val_texts, config.top_k)
        curve.append(point)
        if progress:
            print(_curve_line(point), flush=True)
        if checkpoint is not None:
            state = {"identity": identity, "epoch": epoch + 1, "curve": curve,
                     "heads": heads.state_dict(), "optimiser": optimiser.state_dict(),
                     "schedule": schedule.state_dict(), "rng": rng.bit_generator.state,
                     "torch_rng": torch.get_rng_state()}
            write_atomic(checkpoint, lambda p, s=state: torch.save(s, p))
    return heads.eval(), curve


def _state_digest(heads: GroundingHeads) -> str:
    """SHA-256 of a heads module's weights (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(heads.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _curve_line(point: dict) -> str:
    text = f"epoch {point['epoch']}: train loss {point['train_loss']:.3f}"
    val = point.get("validation")
    if val:
        dice = [v["dice"] for v in val.values() if v["dice"] is not None]
        pres = [v["presence"] for v in val.values()]
        text += (f"; validation grid Dice {np.mean(dice):.3f}, presence accuracy "
                 f"{np.mean(pres):.3f} (mean over {len(val)} sets)")
    return text
