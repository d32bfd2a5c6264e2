"""Weak supervision (MedCLIP-SAM's second stage): train a network on the cascade's pseudo-masks.

The text-prompted cascade labels every unlabelled training image (see
:mod:`clipsam.train.weak_pseudo`), then MONAI's residual U-Net (``num_res_units=2``) learns
those masks with per-pixel weighted cross-entropy + Dice (:mod:`clipsam.train.seg_losses`, Dice
over the whole batch so empty masks are well defined). The teacher's confidence sets the
weights: images where it found nothing are left out (or, by choice, become background), and
pixels where its map and mask disagree weigh ``uncertain_weight``; images the user gives as
negatives train as background. Inputs are plainly resized to ``size`` x ``size`` (see
:mod:`clipsam.models.weak_net`) with light, orientation-preserving augmentation (rotation up to
10 degrees, scale and shift up to 10 %, intensity gain and offset). A ``head`` network learns
the same targets on the segmenter's locked embedding grid instead (the teacher's embeddings,
kept as float16; an image whose pseudo-mask was cached is encoded for training), augmented by
the same warp of the embedding.

The learning rate follows cosine warm restarts (``cycles`` cycles from ``learning_rate`` down to
``min_learning_rate``); the weights at the end of each cycle are kept as an ensemble member
(snapshot / checkpoint ensembling, MedCLIP-SAM v2). A checkpoint is written after every epoch;
``resume=True`` continues from it. Shuffling and augmentation are re-seeded from ``(seed,
epoch)`` at every epoch, so a resumed run follows the same path as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from clipsam.errors import InputError
from clipsam.io.atomic import write_atomic
from clipsam.io.masks import read_mask
from clipsam.models.grounding.grid import mask_to_grid, valid_mask
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.models.weak_net import (
    TrainingItem,
    WeakModelConfig,
    WeakTrainConfig,
    build_network,
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


@dataclass(frozen=True)
class EpochReport:
    """What one finished epoch did; ``member`` is the file saved at a cycle's end, if any."""

    epochs_completed: int
    loss: float
    learning_rate: float
    member: str | None


def member_name(index: int) -> str:
    return f"member_{index}.safetensors"


def save_member(network: torch.nn.Module, path: Path) -> None:
    """Write a network's weights as one ensemble member (safetensors, atomically)."""
    state = {name: tensor.detach().contiguous() for name, tensor in network.state_dict().items()}
    write_atomic(path, lambda tmp: save_file(state, str(tmp)))


def cosine_learning_rate(train: WeakTrainConfig, epoch: int, fraction: float) -> float:
    """The learning rate ``fraction`` of the way through ``epoch`` (0-based), restarting each
    cycle."""
    ends = train.cycle_ends()
    cycle = next(k for k, end in enumerate(ends) if epoch < end)
    start = ends[cycle - 1] if cycle else 0
    progress = (epoch - start + fraction) / (ends[cycle] - start)
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


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _start_state(model_dir: Path, config: WeakModelConfig, resume: bool, network: torch.nn.Module,
                 optimizer: torch.optim.Optimizer) -> tuple[int, WeakModelConfig]:
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
        done = int(checkpoint["epoch"])
        members = tuple(member_name(k) for k, end in enumerate(config.train.cycle_ends())
                        if end <= done and (model_dir / member_name(k)).is_file())
        return done, replace(config, members=members, epochs_completed=done)
    for stale in model_dir.glob("member_*.safetensors"):
        stale.unlink()
    return 0, config


def train_network(
    images: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    model_dir: str | Path,
    config: WeakModelConfig,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> WeakModelConfig:
    """Train on (N, C, S, S) inputs (standardised images, or embeddings for a ``head``),
    (N, 1, S, S) targets in [0, 1] and (N, 1, S, S) per-pixel loss weights.

    Writes ``config.json``, ``checkpoint.pt`` (every epoch) and one member per cycle into
    ``model_dir``; returns the final configuration. ``on_epoch`` is called after each epoch's
    checkpoint is on disk.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    train = config.train
    torch.manual_seed(train.seed)
    network = build_network(train, config.in_channels)
    optimizer = torch.optim.Adam(network.parameters(), lr=train.learning_rate)
    done, config = _start_state(model_dir, config, resume, network, optimizer)
    config.save(model_dir)
    steps = math.ceil(len(images) / train.batch_size)
    ends = train.cycle_ends()
    bar = tqdm(total=train.epochs * steps, initial=done * steps, desc="training", unit="batch",
               disable=not progress)
    for epoch in range(done, train.epochs):
        started = time.perf_counter()
        network.train()
        generator = _epoch_generator(train.seed, epoch)
        order = torch.randperm(len(images), generator=generator)
        total, lr = 0.0, train.learning_rate
        for step in range(steps):
            batch = order[step * train.batch_size:(step + 1) * train.batch_size]
            x, y, w = images[batch].float(), targets[batch], weights[batch]
            if train.augment:
                x, y, w = (warp if train.reads_embedding else augment)(x, y, w, generator)
            lr = cosine_learning_rate(train, epoch, step / steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad()
            loss = weighted_dice_bce(network(x), y, w)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        member = None
        if epoch + 1 in ends:
            member = member_name(ends.index(epoch + 1))
            save_member(network, model_dir / member)
        state = {"epoch": epoch + 1, "model": network.state_dict(),
                 "optimizer": optimizer.state_dict(), "train": asdict(train),
                 "ids": [item.id for item in config.data]}
        write_atomic(model_dir / CHECKPOINT_NAME, lambda tmp, state=state: torch.save(state, tmp))
        config = config.with_progress(epoch + 1, time.perf_counter() - started, member)
        config.save(model_dir)
        if on_epoch is not None:
            on_epoch(EpochReport(epoch + 1, total / len(images), lr, member))
    bar.close()
    return config


def training_set(
    images: Sequence[UnlabelledImage],
    found: dict[str, bool],
    negatives: Sequence[UnlabelledImage],
    train: WeakTrainConfig,
) -> list[TrainingItem]:
    """Every image with its role: the target images (left out when the cascade found nothing
    and the rule is ``skip``), then the negatives."""
    items = [TrainingItem(item.id, str(item.path), found[item.id],
                          used=found[item.id] or train.not_found == "background")
             for item in images]
    items += [TrainingItem(item.id, str(item.path), False, negative=True) for item in negatives]
    return items


def unsure_weight(train: WeakTrainConfig, unsure_share: torch.Tensor) -> torch.Tensor:
    """The loss weight of pixels (or grid cells) by the share of them, in [0, 1], where the
    teacher's map and mask disagree: 1 where it agrees, ``uncertain_weight`` where it does not."""
    return 1.0 - (1.0 - train.uncertain_weight) * unsure_share


@dataclass(frozen=True)
class TrainingTensors:
    """What the network trains on: (N, C, S, S) ``inputs``, (N, 1, S, S) ``targets`` and loss
    ``weights``, with C and, for a ``head``, the segmenter that made the embeddings."""

    inputs: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor
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
    for item in items:
        if not item.used:
            continue
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
    if train.reads_embedding:
        return TrainingTensors(stacked, torch.stack(targets), torch.stack(weights),
                               stacked.shape[1], feature_model)
    # A gray image repeated to 3 channels standardises to the same values as its 1 channel.
    in_channels = 3 if colour else 1
    return TrainingTensors(stacked[:, :in_channels], torch.stack(targets), torch.stack(weights),
                           in_channels)


def train_weak(
    images: Sequence[UnlabelledImage],
    pipeline: Pipeline,
    prompt: str,
    model_dir: str | Path,
    train: WeakTrainConfig | None = None,
    encoder: PromptableSegmenter | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[EpochReport], None] | None = None,
    negatives: Sequence[UnlabelledImage] = (),
    teacher: str = "",
) -> WeakModelConfig:
    """Pseudo-label ``images`` with ``pipeline`` (cached), then train the network on them and
    on ``negatives`` (images without the target, trained as background). ``teacher``: the
    settings key of the run behind ``pipeline``."""
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
    return train_network(tensors.inputs, tensors.targets, tensors.weights, model_dir, config,
                         resume, progress, on_epoch)
