"""The image-text (CLIP-family) model interface used by the cascades.

Every backend encodes texts and images into one L2-normalised space. Backends that can explain
an image with gradients (CLIP-family ViTs) also implement :class:`SaliencyCapable`; backends that
read a segmenter's :class:`ImageEmbedding` directly (the built-in grounding model) implement
:class:`DenseGrounding`. Pipelines check which of these a model offers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from clipsam.models.segmenter import ImageEmbedding

if TYPE_CHECKING:  # only gradient backends use torch; the built-in path runs without it
    import torch


@runtime_checkable
class ImageTextModel(Protocol):
    """Encode texts and images (or crops) into a shared, L2-normalised space."""

    name: str

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """(T, D) float32 unit vectors."""
        ...

    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) float32 unit vectors for (H, W) or (H, W, 3) arrays of any size."""
        ...


@runtime_checkable
class SaliencyCapable(Protocol):
    """What gradient-based saliency (Grad-CAM, gScoreCAM, M2IB) needs from a ViT backend."""

    num_layers: int
    patch_grid: tuple[int, int]

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(1, 3, S, S) model input for one image."""
        ...

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """(T, D) unit text embeddings as a tensor (no gradient)."""
        ...

    def image_features(
        self,
        pixels: torch.Tensor,
        layer: int | None = None,
        hook: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(N, D) unit image embeddings of (N, 3, S, S) pixels; ``hook`` replaces the hidden
        states (N, 1 + h*w, C) output by block ``layer`` of the vision tower (CLS first)."""
        ...


@runtime_checkable
class DenseGrounding(Protocol):
    """A text model that grounds text directly on a segmenter's image embedding."""

    def similarity_map(self, embedding: ImageEmbedding, text: str) -> np.ndarray:
        """(h, w) float32 map over the embedding grid: higher where the text's target is."""
        ...

    def region_scores(
        self, embedding: ImageEmbedding, masks: np.ndarray, texts: Sequence[str]
    ) -> np.ndarray:
        """(N,) how well each (N, H, W) region mask matches the texts' target (higher is
        better)."""
        ...

    def is_present(self, embedding: ImageEmbedding, text: str) -> bool:
        """Whether the text's target appears in the image at all."""
        ...
