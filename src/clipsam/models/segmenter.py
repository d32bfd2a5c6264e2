"""The promptable-segmenter interface shared by every SAM-family backend.

A segmenter encodes an image once into an :class:`ImageEmbedding`, then decodes any number of
box (or point) prompts against it. Every later stage of a pipeline reuses that embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from clipsam.models.resample import resize_bilinear


@dataclass(frozen=True)
class Geometry:
    """How an original image maps onto the model's square input.

    The image of ``original_size`` (H, W) is resized to ``resized_size`` (h, w), keeping its
    aspect ratio, then padded right and bottom to ``input_size`` x ``input_size``.
    """

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    input_size: int

    @property
    def scale(self) -> float:
        return self.resized_size[0] / self.original_size[0]

    def boxes_to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N, 4) xyxy boxes from original pixels to model-input pixels."""
        sy = self.resized_size[0] / self.original_size[0]
        sx = self.resized_size[1] / self.original_size[1]
        return np.asarray(boxes, dtype=np.float32) * np.array([sx, sy, sx, sy], np.float32)

    def points_to_input(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 2) xy points from original pixels to model-input pixels."""
        sy = self.resized_size[0] / self.original_size[0]
        sx = self.resized_size[1] / self.original_size[1]
        return np.asarray(points, dtype=np.float32) * np.array([sx, sy], np.float32)

    def grid_to_original(self, grid_map: np.ndarray) -> np.ndarray:
        """Resample (h, w) or (N, h, w) maps on any grid over the padded square input to the
        original (H, W) / (N, H, W): upsample to the input, cut the padding, resize, all
        bilinear (float32)."""
        maps = np.asarray(grid_map, dtype=np.float32)
        size = self.input_size
        if maps.shape[-2:] != (size, size):
            maps = resize_bilinear(maps, (size, size), antialias=False)
        height, width = self.resized_size
        maps = maps[..., :height, :width]
        if (height, width) != self.original_size:
            maps = resize_bilinear(maps, self.original_size, antialias=False)
        return np.ascontiguousarray(maps, dtype=np.float32)


@dataclass(frozen=True)
class ImageEmbedding:
    """An encoded image: the encoder's feature map plus the geometry to map results back.

    ``features`` has shape (1, C, h, w) (256 x 64 x 64 for SAM-family models) as float32.
    """

    features: np.ndarray
    geometry: Geometry
    model_name: str
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MaskPrediction:
    """Masks for N prompts: full-resolution masks, low-resolution logits, predicted quality."""

    masks: np.ndarray  # (N, H, W) bool, original image size
    low_res_logits: np.ndarray  # (N, h, w) float32, the decoder's own output grid
    scores: np.ndarray  # (N,) float32, the model's IoU estimate


@runtime_checkable
class PromptableSegmenter(Protocol):
    """A SAM-family model: encode once, then predict from boxes and/or points."""

    name: str
    supports_points: bool

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Encode an (H, W) or (H, W, C) array of any numeric range."""
        ...

    def predict(
        self,
        embedding: ImageEmbedding,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
    ) -> MaskPrediction:
        """Decode N prompts in one batch.

        ``boxes`` is (N, 4) xyxy in original pixels; ``points`` is (N, P, 2) xy in original
        pixels with ``point_labels`` (N, P) (1 foreground, 0 background). One mask per prompt.
        """
        ...
