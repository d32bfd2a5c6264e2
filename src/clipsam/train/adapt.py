"""Teach the grounding model a new target from a few labelled images, in seconds.

The heads stay frozen (so built-in concepts are untouched). The new prompt gets a concept
vector in the shared space, starting from the prompt's projected text embedding, and a feature
probe: a linear read-out of the encoder's own (unit) feature in every cell, added to the map's
logit and starting at zero. The heads' space was shaped by the trained concepts only, and a new
target (cell nuclei, a thin bone) is often not apart in it, while the encoder features still
separate it. Both are learned by the same dense loss as training (per-cell BCE against mask
fractions + Dice), the probe with an L2 penalty. Five images say what the target is, not what it
is not: learned from them alone, the probe also fires on images unlike any shot (other
modalities), so targets and non-targets score alike near 1 and no threshold keeps the one while
rejecting the other. Half of the model's negative bank (built-in training images, each set's
1st, 3rd, ... image) therefore enters the loss as cells without the target; the other half
calibrates. Each shot can also bring ``views`` re-encoded augmented copies of itself (a crop,
a gamma and noise, as the training views of :mod:`clipsam.train.views`; one encoder pass each),
learned from beside it. The new concept also gets its own "not found" threshold and mask
source:

* presence: each shot is scored by the concept learned from the *other* shots and their views
  (leave one out);
  the threshold is placed by the same rule as the built-in concepts'
  (:func:`clipsam.train.calibrate.place_threshold`): the recall point of the left-out shots
  (their lowest score for fewer than 20 shots), moved half-way (in logits) towards the 90th
  percentile of images without the target (``--negatives`` and the half of the bank not
  learned from) when that lies below it;
* mask source: the segmenter, the map or their union, whichever gives the best mean Dice on
  the left-out shots through the MedCLIP-SAM pipeline (the segmenter unless another one is
  better by ``min_gain``).

With one shot nothing can be left out: the shot's own score sets the threshold and the
segmenter the mask, and both are recorded as warnings in the model's metadata.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipsam.config import MedClipSamConfig
from clipsam.errors import InputError
from clipsam.eval.seen import add_seen
from clipsam.io.image import segmenter_input
from clipsam.io.labelled_sets import IMAGE_SUFFIXES, Sample, list_samples
from clipsam.io.masks import read_mask
from clipsam.io.read import read_image
from clipsam.models.grounding.grid import mask_to_grid, valid_mask
from clipsam.models.grounding.model import GroundingModel, concept_key, unit_features
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.pipelines.medclipsam import MedClipSamPipeline
from clipsam.train.calibrate import SOURCES, choose_source, place_threshold, source_dice
from clipsam.train.negative_bank import BANK_FILE, NegativeBank, load_bank
from clipsam.train.views import ViewConfig, augment


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of :func:`adapt`: optimiser steps and rate, whether a feature probe is learned
    beside the concept vector (``False``: the vector alone) and its L2 penalty, the weight of
    the negative bank's cells in the loss (0: the bank only calibrates), the re-encoded views
    learned from beside each shot (0: none), the recall point and negatives' quantile of the
    threshold rule, and the Dice margin a mask source other than the segmenter needs."""

    steps: int = 200
    learning_rate: float = 0.05
    probe: bool = True
    probe_decay: float = 1e-3
    bank_weight: float = 1.0
    views: int = 0
    recall: float = 0.95
    negative_quantile: float = 0.9
    min_gain: float = 0.02

    def __post_init__(self) -> None:
        if self.steps < 1 or self.learning_rate <= 0:
            raise InputError(f"adaptation needs steps >= 1 and a positive learning rate, got "
                             f"{self.steps} and {self.learning_rate}")
        if self.views < 0:
            raise InputError(f"views must be 0 or more, got {self.views}")
        if self.probe_decay < 0 or self.bank_weight < 0:
            raise InputError(f"probe_decay and bank_weight must be 0 or more, got "
                             f"{self.probe_decay} and {self.bank_weight}")
        if not 0 < self.recall <= 1 or not 0 <= self.negative_quantile <= 1:
            raise InputError(f"recall must be in (0, 1] and negative_quantile in [0, 1], got "
                             f"{self.recall} and {self.negative_quantile}")


@dataclass(frozen=True)
class Shot:
    """One labelled image: its embedding, (H, W) image and bool mask."""

    embedding: ImageEmbedding
    image: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class AdaptReport:
    """What adaptation measured (left-out shot scores, negatives' scores, Dice per source) and
    the settings that made it."""

    threshold: float
    mask_source: str
    left_out_scores: list[float]
    negative_scores: dict[str, list[float]] = field(default_factory=dict)
    source_dice: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"threshold": round(self.threshold, 4), "mask_source": self.mask_source,
                "left_out_scores": [round(s, 4) for s in self.left_out_scores],
                "negatives": {k: {"n": len(v), "not_found": round(float(np.mean(
                    np.asarray(v) < self.threshold)), 4) if v else None}
                    for k, v in self.negative_scores.items()},
                "source_dice": {k: round(v, 4) for k, v in self.source_dice.items()},
                "warnings": self.warnings, "settings": self.settings}


# the probe's weights are learned as PROBE_GAIN x parameters: one optimiser rate suits both
# the concept vector (unit length) and the probe (logits of several units)
PROBE_GAIN = 16.0


@dataclass(frozen=True)
class LearnedConcept:
    """A (D,) unit concept vector and, unless disabled, its (C + 1,) feature probe."""

    vector: np.ndarray
    probe: np.ndarray | None = None


def learn_concept(
    model: GroundingModel,
    embeddings: Sequence[ImageEmbedding],
    masks: Sequence[np.ndarray],
    prompt: str,
    config: AdaptConfig | None = None,
    bank: NegativeBank | None = None,
) -> LearnedConcept:
    """The concept vector (and feature probe) that ground ``prompt`` on the labelled images;
    the cells of ``bank`` (images without the target), when given, count as negative cells
    with ``config.bank_weight``."""
    config = config or AdaptConfig()
    if not embeddings or len(embeddings) != len(masks):
        raise InputError("adaptation needs at least one image and one mask per image")
    patches = torch.from_numpy(np.stack([model.patch_embeddings(e) for e in embeddings]))
    grid = patches.shape[-1]
    targets = torch.from_numpy(np.stack([mask_to_grid(m, e.geometry, grid)
                                         for m, e in zip(masks, embeddings, strict=True)]))
    valid = torch.from_numpy(np.stack([valid_mask(e.geometry, grid) for e in embeddings]))
    weight = valid.float()
    scale = model.heads.log_scale.detach().exp()
    bias = model.heads.bias.detach()
    start = model.concepts.get(concept_key(prompt))
    if start is None:
        start = model.text_vector(prompt)
    vector = torch.nn.Parameter(torch.from_numpy(np.array(start, np.float32)))
    params = [vector]
    if config.probe:
        features = torch.from_numpy(np.stack([unit_features(e.features[0])
                                              for e in embeddings]))
        probe = torch.nn.Parameter(torch.zeros(features.shape[1] + 1))
        params.append(probe)
    if bank is not None:
        sizes = torch.from_numpy(np.asarray(bank.sizes, np.float32))
    optimiser = torch.optim.Adam(params, lr=config.learning_rate)
    for _ in range(config.steps):
        unit = F.normalize(vector, dim=0)
        logits = scale * torch.einsum("ndhw,d->nhw", patches, unit) + bias
        loss = torch.zeros(())
        if config.probe:
            logits = logits + PROBE_GAIN * (torch.einsum("nchw,c->nhw", features, probe[:-1])
                                            + probe[-1])
            loss = config.probe_decay * (probe[:-1] ** 2).sum()
        loss = loss + F.binary_cross_entropy_with_logits(logits, targets, weight=weight,
                                                         reduction="sum") / weight.sum()
        if bank is not None and config.bank_weight > 0:
            # each centroid stands for its cells; softplus(l) is BCE against "no target"
            cells = bank.cell_logits(model, unit, PROBE_GAIN * probe if config.probe else None)
            loss = loss + config.bank_weight * (sizes * F.softplus(cells)).sum() / sizes.sum()
        prob = torch.sigmoid(logits) * weight
        inter = (prob * targets).sum()
        loss = loss + 1 - (2 * inter + 1) / (prob.sum() + (targets * weight).sum() + 1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    learned = F.normalize(vector.detach(), dim=0).numpy().astype(np.float32)
    if not config.probe:
        return LearnedConcept(learned)
    return LearnedConcept(learned, (PROBE_GAIN * probe.detach()).numpy().astype(np.float32))


def with_concept(model: GroundingModel, prompt: str, learned: LearnedConcept,
                 threshold: float | None = None, mask_source: str | None = None,
                 report: dict | None = None) -> GroundingModel:
    """A copy of ``model`` (same heads) that grounds ``prompt`` with ``learned`` and, when
    given, its own presence threshold and mask source."""
    key = concept_key(prompt)
    thresholds = dict(model.concept_thresholds)
    sources = dict(model.mask_sources)
    probes = {k: v for k, v in model.concept_probes.items() if k != key}
    if learned.probe is not None:
        probes[key] = learned.probe
    if threshold is not None:
        thresholds[key] = threshold
    if mask_source is not None:
        sources[key] = mask_source
    adapted = dict(model.metadata.get("adapted", {}))
    adapted[key] = report or {}
    # a level or margin calibrated for the base model's map of this name does not carry over
    levels = {k: v for k, v in model.map_levels.items() if k != key}
    margins = {k: v for k, v in model.box_margins.items() if k != key}
    # nor do its other operating points, presence head and statistic
    points = {k: v for k, v in model.concept_points.items() if k != key}
    presence_heads = {k: v for k, v in model.presence_heads.items() if k != key}
    statistics = {k: v for k, v in model.presence_statistics.items() if k != key}
    copy = GroundingModel(model.heads, model.presence, {**model.concepts, key: learned.vector},
                          thresholds, model._text_encoder, model._segmenter,
                          {**model.metadata, "adapted": adapted}, model.concept_phrases,
                          sources, concept_probes=probes, map_levels=levels,
                          box_margins=margins, volume=model.volume, word_rule=model.word_rule,
                          concept_points=points, presence_heads=presence_heads,
                          presence_statistics=statistics)
    copy.source_dir = model.source_dir
    return copy


def shot_views(shot: Shot, index: int, segmenter: PromptableSegmenter, count: int,
               config: ViewConfig | None = None) -> list[Shot]:
    """``count`` augmented copies of a shot (:func:`clipsam.train.views.augment`), each
    encoded by ``segmenter``; drawn reproducibly from the shot's position ``index``."""
    config = config or ViewConfig()
    views = []
    for k in range(count):
        pixels, mask = augment(shot.image, shot.mask, config, np.random.default_rng([index, k]))
        views.append(Shot(segmenter.encode(pixels), pixels, mask))
    return views


def adapt(
    model: GroundingModel,
    shots: Sequence[Shot],
    prompt: str,
    segmenter: PromptableSegmenter,
    negatives: Sequence[ImageEmbedding] = (),
    config: AdaptConfig | None = None,
) -> tuple[GroundingModel, AdaptReport]:
    """Learn ``prompt`` from ``shots`` with its own presence threshold and mask source."""
    config = config or AdaptConfig()
    if not shots:
        raise InputError("adaptation needs at least one labelled image")
    warnings: list[str] = []
    bank_path = model.source_dir / BANK_FILE if model.source_dir is not None else None
    bank = load_bank(bank_path) if bank_path is not None and bank_path.is_file() else None
    if bank is None:
        warnings.append("the base model has no negative bank: only given negatives used")
    elif config.probe and bank.features is None:
        warnings.append("the base model's negative bank predates feature probes (no encoder "
                        "features): only given negatives used; rebuild it with clipsam "
                        "finetune")
        bank = None
    # half the bank teaches the concept what it is not, the other half calibrates it
    train_bank, calibration_bank = (bank.halves() if bank is not None and config.bank_weight > 0
                                    else (None, bank))
    # each shot with its views; leaving a shot out leaves its views out too
    groups = [[shot, *shot_views(shot, i, segmenter, config.views)]
              for i, shot in enumerate(shots)]
    learn = lambda chosen: learn_concept(  # noqa: E731
        model, [s.embedding for g in chosen for s in g], [s.mask for g in chosen for s in g],
        prompt, config, train_bank)
    learned = learn(groups)
    left_out, per_source = [], {s: [] for s in SOURCES}
    if len(shots) == 1:
        trial = with_concept(model, prompt, learned)
        left_out.append(trial.presence_score(shots[0].embedding, prompt))
        warnings.append("1 shot: threshold from the shot itself (nothing left out), mask "
                        "source 'segmenter'")
    else:
        for i, shot in enumerate(shots):
            # threshold 0: the pipeline segments every left-out shot, found or not
            trial = with_concept(model, prompt, learn([g for j, g in enumerate(groups) if j != i]),
                                 threshold=0.0)
            left_out.append(trial.presence_score(shot.embedding, prompt))
            pipeline = MedClipSamPipeline(segmenter, trial,
                                          MedClipSamConfig(mask_source="segmenter"))
            measured = source_dice(pipeline, shot.image, prompt, shot.embedding, shot.mask)
            for source, value in measured.items():
                per_source[source].append(value)
    final = with_concept(model, prompt, learned)
    negative_scores: dict[str, list[float]] = {}
    if negatives:
        negative_scores["given"] = [final.presence_score(e, prompt) for e in negatives]
    if calibration_bank is not None:
        negative_scores["bank"] = [float(v) for v in calibration_bank.presence_scores(
            final, learned.vector, learned.probe)]
    pooled = [v for values in negative_scores.values() for v in values]
    threshold, note = place_threshold(np.asarray(left_out), np.asarray(pooled), config.recall,
                                      config.negative_quantile)
    if note:
        warnings.append(note)
    means = {s: float(np.mean(v)) for s, v in per_source.items() if v}
    source = choose_source(means, config.min_gain) if means else "segmenter"
    report = AdaptReport(threshold, source, left_out, negative_scores, means, warnings,
                         asdict(config))
    return with_concept(model, prompt, learned, threshold, source, report.to_dict()), report


def pick_shots(samples: Sequence[Sample], shots: int, seed: int = 0) -> list[Sample]:
    """``shots`` samples with a non-empty mask, chosen reproducibly by ``seed``."""
    labelled = [s for s in samples if read_mask(s.mask_path).any()]
    if len(labelled) < shots:
        raise InputError(f"asked for {shots} labelled images, only {len(labelled)} have a "
                         f"non-empty mask")
    order = np.random.default_rng(seed).permutation(len(labelled))[:shots]
    return [labelled[i] for i in sorted(order)]


def _encode(model: GroundingModel, path: Path) -> tuple[ImageEmbedding, np.ndarray]:
    image = segmenter_input(read_image(path))
    return model.segmenter.encode(image), image


def adapt_from_folder(
    model: GroundingModel,
    folder: Path,
    prompt: str,
    shots: int = 5,
    seed: int = 0,
    negatives_dir: Path | None = None,
    config: AdaptConfig | None = None,
) -> tuple[GroundingModel, list[Sample], AdaptReport]:
    """Encode ``shots`` labelled images of a set folder (and every image of ``negatives_dir``)
    and learn ``prompt`` from them. The adapted model's metadata adds the shots (under the
    folder's name) and the negatives (under "negatives") to the images it has seen
    (:func:`clipsam.eval.seen.add_seen`)."""
    chosen = pick_shots(list_samples(Path(folder)), shots, seed)
    labelled = []
    for sample in chosen:
        embedding, image = _encode(model, sample.image_path)
        labelled.append(Shot(embedding, image, read_mask(sample.mask_path)))
    negatives = []
    if negatives_dir is not None:
        files = sorted(p for p in Path(negatives_dir).rglob("*")
                       if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"--negatives {negatives_dir} holds no image")
        negatives = [_encode(model, p)[0] for p in files]
    adapted, report = adapt(model, labelled, prompt, model.segmenter, negatives, config)
    seen = add_seen(adapted.metadata, Path(folder).name, [s.image_path for s in chosen])
    if negatives_dir is not None:
        seen = add_seen(seen, "negatives", files)
    adapted.metadata = seen
    return adapted, chosen, report


def save_adapted(model: GroundingModel, out_dir: Path) -> Path:
    """Save an adapted model; its base's negative bank goes with it (so it can be adapted
    again)."""
    out_dir = Path(out_dir)
    model.save(out_dir)
    bank = model.source_dir / BANK_FILE if model.source_dir is not None else None
    if bank is not None and bank.is_file() and bank.resolve() != (out_dir / BANK_FILE).resolve():
        shutil.copyfile(bank, out_dir / BANK_FILE)
    return out_dir
