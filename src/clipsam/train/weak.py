"""Weak supervision (MedCLIP-SAM's second stage): train a network on the cascade's pseudo-masks.

The text-prompted cascade labels every unlabelled training image (see
:mod:`clipsam.train.weak_pseudo`; "not found" images become empty masks), then MONAI's residual
U-Net (``num_res_units=2``) learns those masks with Dice + cross-entropy (``DiceCELoss``, Dice
over the whole batch so empty masks are well defined). Inputs are plainly resized to
``size`` x ``size`` (default 128; see :mod:`clipsam.models.weak_net`) with light,
orientation-preserving augmentation (rotation up to 10 degrees, scale and shift up to 10 %,
intensity gain and offset), which a few hundred images train in minutes on a 2-core CPU for the
default 30 epochs.

The learning rate follows cosine warm restarts (``cycles`` cycles from ``learning_rate`` down to
``min_learning_rate``); the weights at the end of each cycle are kept as an ensemble member
(snapshot / checkpoint ensembling, MedCLIP-SAM v2). A checkpoint is written after every epoch;
``resume=True`` continues from it. Shuffling and augmentation are re-seeded from ``(seed,
epoch)`` at every epoch, so a resumed run follows the same path as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from safetensors.torch import save_file
from tqdm import tqdm

from clipsam.errors import InputError
from clipsam.io.atomic import write_atomic
from clipsam.io.masks import read_mask
from clipsam.models.segmenter import PromptableSegmenter
from clipsam.models.weak_net import (
    TrainingItem,
    WeakModelConfig,
    WeakTrainConfig,
    build_network,
    network_input,
)
from clipsam.pipelines.base import Pipeline
from clipsam.train.weak_data import is_colour, network_target
from clipsam.train.weak_pseudo import (
    UnlabelledImage,
    load_plane,
    make_pseudo_masks,
    pseudo_mask_path,
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


def augment(images: torch.Tensor, targets: torch.Tensor,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotation (10 deg), scale and shift (10 %), intensity gain and offset (0.1)."""
    n = images.shape[0]

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator) * 2 - 1

    angle = uniform(n) * math.radians(10)
    scale = 1 + uniform(n) * 0.1
    shift = uniform(n, 2) * 0.2  # normalised coordinates span 2: up to 10 % of the side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                           align_corners=False)
    targets = F.grid_sample(targets, grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
    gain = 1 + uniform(n, 1, 1, 1) * 0.1
    offset = uniform(n, 1, 1, 1) * 0.1
    return images * gain + offset, (targets >= 0.5).float()


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
    model_dir: str | Path,
    config: WeakModelConfig,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> WeakModelConfig:
    """Train on (N, C, S, S) standardised images and (N, 1, S, S) {0, 1} targets.

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
    loss_fn = DiceCELoss(sigmoid=True, batch=True)
    done, config = _start_state(model_dir, config, resume, network, optimizer)
    config.save(model_dir)
    steps = math.ceil(len(images) / train.batch_size)
    ends = train.cycle_ends()
    bar = tqdm(total=train.epochs * steps, initial=done * steps, desc="training", unit="batch",
               disable=not progress)
    for epoch in range(done, train.epochs):
        network.train()
        generator = _epoch_generator(train.seed, epoch)
        order = torch.randperm(len(images), generator=generator)
        total, lr = 0.0, train.learning_rate
        for step in range(steps):
            batch = order[step * train.batch_size:(step + 1) * train.batch_size]
            x, y = images[batch], targets[batch]
            if train.augment:
                x, y = augment(x, y, generator)
            lr = cosine_learning_rate(train, epoch, step / steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad()
            loss = loss_fn(network(x), y)
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
        config = config.with_progress(epoch + 1, member)
        config.save(model_dir)
        if on_epoch is not None:
            on_epoch(EpochReport(epoch + 1, total / len(images), lr, member))
    bar.close()
    return config


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
) -> WeakModelConfig:
    """Pseudo-label ``images`` with ``pipeline`` (cached), then train the network on them."""
    train = train or WeakTrainConfig()
    model_dir = Path(model_dir)
    if not images:
        raise InputError("no training images")
    found = make_pseudo_masks(images, pipeline, prompt, model_dir, encoder, progress)
    if not any(found.values()):
        raise InputError(f"{pipeline.name} found {prompt!r} in none of the {len(images)} "
                         "images: there is nothing to learn")
    inputs, colour = [], False
    for item in images:
        plane = load_plane(item.path)
        colour = colour or is_colour(plane)
        inputs.append(network_input(plane, train.size, 3))
    # A gray image repeated to 3 channels standardises to the same values as its 1 channel.
    in_channels = 3 if colour else 1
    stacked = torch.stack(inputs)[:, :in_channels]
    targets = torch.stack([network_target(read_mask(pseudo_mask_path(model_dir, item.id)),
                                          train.size) for item in images])
    config = WeakModelConfig(
        train=train, in_channels=in_channels, prompt=prompt, pseudo_method=pipeline.name,
        data=tuple(TrainingItem(item.id, str(item.path), found[item.id]) for item in images))
    return train_network(stacked, targets, model_dir, config, resume, progress, on_epoch)
