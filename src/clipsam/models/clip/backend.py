"""What every CLIP-family backend shares: batching, normalisation and the vision-block hook.

A backend supplies its towers (:meth:`ClipBackend.embed_tokens`, :meth:`ClipBackend.embed_pixels`)
and block lists; this class turns them into :class:`~clipsam.models.image_text.ImageTextModel`
and :class:`~clipsam.models.image_text.SaliencyCapable`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipsam.errors import InputError
from clipsam.models.clip.preprocess import ClipPreprocess
from clipsam.models.device import module_device


class ClipBackend(abc.ABC):
    """A dual-encoder ViT image-text model with L2-normalised outputs.

    The network may live on any device (:meth:`to`); the public methods take and return CPU
    tensors and arrays, so callers never move data themselves. ``embed_tokens`` and
    ``embed_pixels`` move their inputs to the network's device and return on it.
    """

    name: str
    network: nn.Module
    transform: ClipPreprocess
    batch_size: int = 16

    @abc.abstractmethod
    def embed_tokens(self, texts: Sequence[str]) -> torch.Tensor:
        """(T, D) unnormalised text embeddings (gradients follow the parameters' settings)."""

    @abc.abstractmethod
    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, D) unnormalised image embeddings of preprocessed (N, 3, S, S) pixels."""

    @property
    @abc.abstractmethod
    def vision_blocks(self) -> nn.ModuleList:
        """The vision tower's transformer blocks, in order."""

    @property
    @abc.abstractmethod
    def text_blocks(self) -> nn.ModuleList:
        """The text tower's transformer blocks, in order."""

    @property
    @abc.abstractmethod
    def head_modules(self) -> list[nn.Module]:
        """What follows the last blocks of both towers: final norms and projections."""

    @property
    @abc.abstractmethod
    def patch_size(self) -> int:
        """Side of one vision patch in input pixels."""

    @property
    @abc.abstractmethod
    def logit_scale(self) -> float:
        """The learned temperature multiplier (exp of the stored log scale)."""

    @abc.abstractmethod
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the weights and configuration in the upstream layout they were loaded from."""

    @property
    def device(self) -> str:
        """Where the network actually runs ("cpu", "cuda:0"...)."""
        return module_device(self.network)

    def to(self, device: str) -> ClipBackend:
        """Move the network to ``device`` ("cpu" or "cuda"); returns self."""
        self.network.to(device)
        return self

    @property
    def num_layers(self) -> int:
        return len(self.vision_blocks)

    @property
    def patch_grid(self) -> tuple[int, int]:
        side = self.transform.size // self.patch_size
        return side, side

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return self.transform(image)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.text_features(texts).numpy().astype(np.float32)

    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if len(images) == 0:
            raise InputError("no images given")
        chunks = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                pixels = self.transform.batch(images[start:start + self.batch_size])
                chunks.append(F.normalize(self.embed_pixels(pixels), dim=-1).cpu())
        return torch.cat(chunks).numpy().astype(np.float32)

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or any(not text.strip() for text in texts):
            raise InputError("text prompts must be non-empty strings")
        with torch.no_grad():
            return F.normalize(self.embed_tokens(texts), dim=-1).cpu()

    def image_features(
        self,
        pixels: torch.Tensor,
        layer: int | None = None,
        hook: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(N, D) unit embeddings of (N, 3, S, S) pixels; ``hook`` replaces the output of vision
        block ``layer`` (negative indices count from the end) and sees it on the CPU."""
        if hook is None:
            return F.normalize(self.embed_pixels(pixels), dim=-1).cpu()
        if layer is None:
            raise InputError("a hook needs the index of the vision block it replaces")
        with self._hooked(layer, hook):
            return F.normalize(self.embed_pixels(pixels), dim=-1).cpu()

    @contextmanager
    def _hooked(
        self, layer: int, hook: Callable[[torch.Tensor], torch.Tensor]
    ) -> Iterator[None]:
        if not -self.num_layers <= layer < self.num_layers:
            raise InputError(f"vision layer {layer} out of range for {self.num_layers} blocks")

        def on_cpu(hidden: torch.Tensor) -> torch.Tensor:
            return hook(hidden.cpu()).to(hidden.device)

        def replace(_module: nn.Module, _inputs: object, output: object) -> object:
            if isinstance(output, tuple):
                return (on_cpu(output[0]), *output[1:])
            return on_cpu(output)

        handle = self.vision_blocks[layer].register_forward_hook(replace)
        try:
            yield
        finally:
            handle.remove()
