"""Weak supervision (MedCLIP-SAM's second stage): train a network on the cascade's pseudo-masks.

The text-prompted cascade labels every unlabelled training image (see
:mod:`clipsam.train.weak_pseudo`), then a residual U-Net (:mod:`clipsam.models.weak_net`)
learns those masks with per-pixel weighted cross-entropy + Dice (:mod:`clipsam.train.seg_losses`,
Dice over the whole batch so empty masks are well defined). The teacher's confidence sets the
weights: images where it found nothing are left out (or, by choice, become background), and
pixels where its map and mask disagree weigh ``uncertain_weight``; images the user gives as
negatives train as background. Inputs are plainly resized to ``size`` x ``size`` (see
:mod:`clipsam.models.weak_net`) with light, orientation-preserving augmentation (rotation up to
10 degrees, scale and shift up to 10 %, intensity gain and offset). A ``head`` network learns
the same targets on the segmenter's locked embedding grid instead (the teacher's embeddings,
kept as float16; an image whose pseudo-mask was cached is encoded for training), augmented by
the same warp of the embedding.

Training runs a fixed number of optimisation ``steps`` whatever the image count (batches drawn
from a fresh shuffle of the images at each pass). A share of the subjects is held out
(:func:`clipsam.io.splits.held_out_subjects`): every ``eval_every`` steps and at each cycle's end
the network's mask on them is compared with their pseudo-masks (the student's agreement with
its teacher, mean Dice at the network's resolution), and the training loss and agreement are
recorded. The learning rate follows cosine warm restarts (``cycles`` cycles from
``learning_rate`` down to ``min_learning_rate``); of each cycle, the evaluated weights that
agreed best with the teacher are kept as an ensemble member (the cycle's last ones without
held-out images; snapshot / checkpoint ensembling, MedCLIP-SAM v2). The finished ensemble's
agreement is recorded with a warning when it is below the floor
(:data:`clipsam.config.WEAK_AGREEMENT_FLOOR`). A checkpoint is written at every evaluation;
``resume=True`` continues from it. Shuffling and augmentation are seeded from ``(seed, pass)``
and ``(seed, step)``, so a resumed run follows the same path as an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from clipsam.errors import InputError
from clipsam.eval.metrics import dice
from clipsam.io.atomic import write_atomic
from clipsam.io.masks import read_mask
from clipsam.io.splits import held_out_subjects
from clipsam.models.grounding.grid import mask_to_grid, valid_mask
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.models.weak_net import (
    TrainingItem,
    WeakModelConfig,
    WeakTrainConfig,
    build_network,
    learning_warning,
    network_input,
)
from clipsam.pipelines.base import Pipeline
from clipsam.train.seg_losses import weighted_dice_bce
from clipsam.train.weak_data import is_colour, network_target
from clipsam.train.weak_pseudo import (
    UnlabelledImage,
    load_plane,
    make_pseudo_masks,
    pseudo_mask_path,
    unsure_mask_path,
)

CHECKPOINT_NAME = "checkpoint.pt"
VALIDATION_SALT = "weak-validation"
EVAL_BATCH = 8


@dataclass(frozen=True)
class EvalReport:
    """One evaluation during training: the steps done, the mean training loss since the
    previous evaluation, the learning rate, the agreement on the held-out images (None without
    them) and the member file saved at a cycle's end, if any."""

    steps_completed: int
    loss: float
    learning_rate: float
    agreement: float | None
    member: str | None


def member_name(index: int) -> str:
    return f"member_{index}.safetensors"


def save_member(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write a network's weights (its state dict) as one ensemble member (safetensors,
    atomically)."""
    tensors = {name: tensor.detach().contiguous() for name, tensor in state.items()}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp)))


def cosine_learning_rate(train: WeakTrainConfig, step: int) -> float:
    """The learning rate of ``step`` (0-based), restarting at each cycle's first step."""
    ends = train.cycle_ends()
    cycle = next(k for k, end in enumerate(ends) if step < end)
    start = ends[cycle - 1] if cycle else 0
    progress = (step - start) / (ends[cycle] - start)
    low, high = train.min_learning_rate, train.learning_rate
    return low + 0.5 * (high - low) * (1 + math.cos(math.pi * progress))


def _uniform(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=generator) * 2 - 1


def warp(inputs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random rotation (up to 10 deg), scale and shift (up to 10 %) per sample, applied
    bilinearly to the (N, C, S, S) inputs (images or embeddings) and their (N, 1, S, S) targets
    and weights."""
    n = inputs.shape[0]
    uniform = partial(_uniform, generator)
    angle = uniform(n) * math.radians(10)
    scale = 1 + uniform(n) * 0.1
    shift = uniform(n, 2) * 0.2  # normalised coordinates span 2: up to 10 % of the side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(inputs.shape), align_corners=False)
    return tuple(F.grid_sample(t, grid, mode="bilinear", padding_mode="border",
                               align_corners=False) for t in (inputs, targets, weights))


def augment(images: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The U-Net's augmentation: :func:`warp`, then intensity gain and offset (up to 0.1);
    the targets are {0, 1} again after the warp."""
    images, targets, weights = warp(images, targets, weights, generator)
    gain = 1 + _uniform(generator, images.shape[0], 1, 1, 1) * 0.1
    offset = _uniform(generator, images.shape[0], 1, 1, 1) * 0.1
    return images * gain + offset, (targets >= 0.5).float(), weights


def _generator(seed: int, index: int, stream: int) -> torch.Generator:
    """Stream 0 shuffles pass ``index``; stream 1 augments step ``index``."""
    return torch.Generator().manual_seed((seed * 1_000_003 + index) * 2 + stream)


def batch_indices(count: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The rows of ``step`` (0-based): consecutive passes over the ``count`` training images,
    each in a fresh seeded order (a pass's last batch may be smaller)."""
    per_pass = math.ceil(count / batch_size)
    order = torch.randperm(count, generator=_generator(seed, step // per_pass, 0))
    position = step % per_pass
    return order[position * batch_size:(position + 1) * batch_size]


@torch.no_grad()
def agreement(networks: Sequence[torch.nn.Module], inputs: torch.Tensor, targets: torch.Tensor,
              weights: torch.Tensor) -> float:
    """Mean per-image Dice of the networks' mean probability > 0.5 against the (N, 1, S, S)
    targets >= 0.5, over the pixels the loss weighs (weight > 0; 1 when both are empty). The
    networks are left in eval mode."""
    for network in networks:
        network.eval()
    scores = []
    for start in range(0, len(inputs), EVAL_BATCH):
        rows = slice(start, start + EVAL_BATCH)
        x = inputs[rows].float()
        probability = torch.stack([torch.sigmoid(network(x)) for network in networks]).mean(0)
        inside = weights[rows] > 0
        predicted = ((probability > 0.5) & inside).numpy()
        reference = ((targets[rows] >= 0.5) & inside).numpy()
        scores += [dice(p[0], r[0]) for p, r in zip(predicted, reference, strict=True)]
    return float(np.mean(scores))


@dataclass
class _Progress:
    """Where a training run stands: steps done, the best evaluated weights of the current
    cycle, the evaluations and kept members so far, the training seconds."""

    step: int = 0
    best: dict | None = None
    history: list[dict] = field(default_factory=list)
    origins: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _start_state(model_dir: Path, config: WeakModelConfig, resume: bool, network: torch.nn.Module,
                 optimizer: torch.optim.Optimizer) -> _Progress:
    """Load the checkpoint when resuming; otherwise clear a previous run's members."""
    checkpoint_path = model_dir / CHECKPOINT_NAME
    if resume and checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, weights_only=True)
        ids = [item.id for item in config.data]
        if checkpoint["train"] != asdict(config.train) or checkpoint["ids"] != ids:
            raise InputError(f"{checkpoint_path} was made with other training settings or "
                             "images: rerun without --resume to start again")
        network.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        return _Progress(int(checkpoint["step"]), checkpoint["best"], checkpoint["history"],
                         checkpoint["origins"], float(checkpoint["seconds"]))
    for stale in model_dir.glob("member_*.safetensors"):
        stale.unlink()
    return _Progress()


def _with_progress(config: WeakModelConfig, progress: _Progress) -> WeakModelConfig:
    return replace(config, steps_completed=progress.step, train_seconds=progress.seconds,
                   history=tuple(progress.history),
                   members=tuple(origin["member"] for origin in progress.origins),
                   member_origins=tuple(progress.origins))


def train_network(
    tensors: TrainingTensors,
    model_dir: str | Path,
    config: WeakModelConfig,
    resume: bool = False,
    progress: bool = True,
    on_eval: Callable[[EvalReport], None] | None = None,
) -> WeakModelConfig:
    """Train on the rows of ``tensors`` that are not held out and validate on the others (see
    the module notes).

    Writes ``config.json``, ``checkpoint.pt`` (at every evaluation) and one member per cycle
    into ``model_dir``; returns the final configuration, with the ensemble's agreement and its
    warning. ``on_eval`` is called after each evaluation's checkpoint is on disk.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    train = config.train
    fit, held = ~tensors.held_out, tensors.held_out
    inputs, targets, weights = tensors.inputs[fit], tensors.targets[fit], tensors.weights[fit]
    validation = (tensors.inputs[held], tensors.targets[held], tensors.weights[held])
    validates = bool(held.any())
    if not len(inputs):
        raise InputError("every image was held out for validation: nothing to train on")
    torch.manual_seed(train.seed)
    network = build_network(train, config.in_channels)
    optimizer = torch.optim.Adam(network.parameters(), lr=train.learning_rate)
    state = _start_state(model_dir, config, resume, network, optimizer)
    config = _with_progress(config, state)
    config.save(model_dir)
    ends = train.cycle_ends()
    bar = tqdm(total=train.steps, initial=state.step, desc="training", unit="step",
               disable=not progress)
    losses, started, lr = [], time.perf_counter(), train.learning_rate
    network.train()
    for step in range(state.step, train.steps):
        batch = batch_indices(len(inputs), train.batch_size, train.seed, step)
        x, y, w = inputs[batch].float(), targets[batch], weights[batch]
        if train.augment:
            x, y, w = (warp if train.reads_embedding else augment)(
                x, y, w, _generator(train.seed, step, 1))
        lr = cosine_learning_rate(train, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        loss = weighted_dice_bce(network(x), y, w)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        state.step = step + 1
        if state.step % train.eval_every and state.step not in ends:
            continue
        score = agreement([network], *validation) if validates else None
        network.train()
        if state.best is None or score is None or score >= state.best["agreement"]:
            state.best = {"step": state.step, "agreement": score,
                          "model": copy.deepcopy(network.state_dict())}
        member = None
        if state.step in ends:
            member = member_name(ends.index(state.step))
            save_member(state.best["model"], model_dir / member)
            state.origins.append({"member": member, "step": state.best["step"],
                                  "agreement": state.best["agreement"]})
            state.best = None
        state.history.append({"step": state.step, "loss": float(np.mean(losses)),
                              "learning_rate": lr, "agreement": score})
        state.seconds += time.perf_counter() - started
        checkpoint = {"step": state.step, "model": network.state_dict(),
                      "optimizer": optimizer.state_dict(), "train": asdict(train),
                      "ids": [item.id for item in config.data], "best": state.best,
                      "history": state.history, "origins": state.origins,
                      "seconds": state.seconds}
        write_atomic(model_dir / CHECKPOINT_NAME,
                     lambda tmp, checkpoint=checkpoint: torch.save(checkpoint, tmp))
        config = _with_progress(config, state)
        config.save(model_dir)
        if score is not None:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", agreement=f"{score:.3f}")
        if on_eval is not None:
            on_eval(EvalReport(state.step, state.history[-1]["loss"], lr, score, member))
        losses, started = [], time.perf_counter()
    bar.close()
    final = None
    if validates:
        members = []
        for name in config.members:
            member = build_network(train, config.in_channels)
            member.load_state_dict(load_file(str(model_dir / name)))
            members.append(member)
        final = agreement(members, *validation)
    config = replace(config, agreement=final, warning=learning_warning(config, final))
    config.save(model_dir)
    return config


def training_set(
    images: Sequence[UnlabelledImage],
    found: dict[str, bool],
    negatives: Sequence[UnlabelledImage],
    train: WeakTrainConfig,
) -> list[TrainingItem]:
    """Every image with its role: the target images (left out when the cascade found nothing
    and the rule is ``skip``; ``validation_share`` of the used ones' subjects held out), then
    the negatives (always trained on)."""
    items = [TrainingItem(item.id, str(item.path), found[item.id],
                          used=found[item.id] or train.not_found == "background",
                          subject=item.subject or item.id)
             for item in images]
    held = held_out_subjects((item.subject for item in items if item.used),
                             train.validation_share, VALIDATION_SALT)
    items = [replace(item, held_out=item.used and item.subject in held) for item in items]
    items += [TrainingItem(item.id, str(item.path), False, negative=True,
                           subject=item.subject or item.id) for item in negatives]
    return items


def unsure_weight(train: WeakTrainConfig, unsure_share: torch.Tensor) -> torch.Tensor:
    """The loss weight of pixels (or grid cells) by the share of them, in [0, 1], where the
    teacher's map and mask disagree: 1 where it agrees, ``uncertain_weight`` where it does not."""
    return 1.0 - (1.0 - train.uncertain_weight) * unsure_share


@dataclass(frozen=True)
class TrainingTensors:
    """What the network trains on: (N, C, S, S) ``inputs``, (N, 1, S, S) ``targets`` and loss
    ``weights``, the (N,) bool ``held_out`` rows (validation, not trained on), with C and, for
    a ``head``, the segmenter that made the embeddings."""

    inputs: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
    held_out: torch.Tensor
    in_channels: int
    feature_model: str = ""


def training_tensors(items: Sequence[TrainingItem], model_dir: Path, train: WeakTrainConfig,
                     encoder: PromptableSegmenter | None = None,
                     embeddings: Mapping[str, ImageEmbedding] | None = None) -> TrainingTensors:
    """The used items as network inputs with their pseudo-mask targets and weights.

    A U-Net reads the resized image; a ``head`` reads ``encoder``'s embedding (float16 in
    memory; taken from ``embeddings`` by image id when there, e.g. the teacher's), with
    targets and weights as each grid cell's covered fraction (padding cells of the letterboxed
    input weigh 0).
    """
    inputs, targets, weights, colour, feature_model = [], [], [], False, ""
    used = [item for item in items if item.used]
    for item in used:
        plane = load_plane(Path(item.image))
        colour = colour or is_colour(plane)
        if item.negative:
            target = unsure = np.zeros(plane.shape[:2], bool)
        else:
            target = read_mask(pseudo_mask_path(model_dir, item.id))
            unsure = read_mask(unsure_mask_path(model_dir, item.id))
        if train.reads_embedding:
            embedding = (embeddings or {}).get(item.id)
            if embedding is None:
                if encoder is None:
                    raise InputError("a head network trains on the segmenter's embeddings: "
                                     "give the encoder")
                embedding = encoder.encode(plane)
            feature_model = embedding.model_name
            geometry, grid = embedding.geometry, embedding.features.shape[-1]
            inputs.append(torch.from_numpy(np.asarray(embedding.features[0], np.float16)))
            targets.append(torch.from_numpy(mask_to_grid(target, geometry, grid))[None])
            inside = torch.from_numpy(valid_mask(geometry, grid)).float()
            unsure_share = torch.from_numpy(mask_to_grid(unsure, geometry, grid))
            weights.append((inside * unsure_weight(train, unsure_share))[None])
            continue
        inputs.append(network_input(plane, train.size, 3))
        targets.append(network_target(target, train.size))
        weights.append(unsure_weight(train, network_target(unsure, train.size)))
    stacked = torch.stack(inputs)
    held_out = torch.tensor([item.held_out for item in used], dtype=torch.bool)
    if train.reads_embedding:
        return TrainingTensors(stacked, torch.stack(targets), torch.stack(weights), held_out,
                               stacked.shape[1], feature_model)
    # A gray image repeated to 3 channels standardises to the same values as its 1 channel.
    in_channels = 3 if colour else 1
    return TrainingTensors(stacked[:, :in_channels], torch.stack(targets), torch.stack(weights),
                           held_out, in_channels)


def train_weak(
    images: Sequence[UnlabelledImage],
    pipeline: Pipeline,
    prompt: str,
    model_dir: str | Path,
    train: WeakTrainConfig | None = None,
    encoder: PromptableSegmenter | None = None,
    resume: bool = False,
    progress: bool = True,
    on_eval: Callable[[EvalReport], None] | None = None,
    negatives: Sequence[UnlabelledImage] = (),
    teacher: str = "",
) -> WeakModelConfig:
    """Pseudo-label ``images`` with ``pipeline`` (cached), then train the network on them and
    on ``negatives`` (images without the target, trained as background), holding a share of
    the images' subjects out to validate it. ``teacher``: the settings key of the run behind
    ``pipeline``."""
    train = train or WeakTrainConfig()
    model_dir = Path(model_dir)
    if not images:
        raise InputError("no training images")
    clash = {item.id for item in images} & {item.id for item in negatives}
    if clash:
        raise InputError(f"{len(clash)} negative image(s) share a name with a target image, "
                         f"e.g. {sorted(clash)[0]!r}: rename them")
    kept: dict[str, ImageEmbedding] | None = {} if train.reads_embedding else None
    found = make_pseudo_masks(images, pipeline, prompt, model_dir, encoder, progress, teacher,
                              kept)
    if not any(found.values()):
        raise InputError(f"{pipeline.name} found {prompt!r} in none of the {len(images)} "
                         "images: there is nothing to learn")
    items = training_set(images, found, negatives, train)
    tensors = training_tensors(items, model_dir, train, encoder, kept)
    del kept  # the stacked inputs hold copies; free the per-image arrays before training
    config = WeakModelConfig(train=train, in_channels=tensors.in_channels, prompt=prompt,
                             pseudo_method=pipeline.name, data=tuple(items), teacher=teacher,
                             feature_model=tensors.feature_model)
    return train_network(tensors, model_dir, config, resume, progress, on_eval)
