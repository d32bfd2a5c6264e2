""":class:`SamSegmenter`: any SAM-family network behind the shared PromptableSegmenter API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from clipsam.errors import InputError
from clipsam.models.sam.architecture import SamArchitecture
from clipsam.models.sam.preprocess import PREPROCESS_REVISION, prepare_image, prompt_points
from clipsam.models.sam.runtime import Runtime
from clipsam.models.segmenter import ImageEmbedding, MaskPrediction

# Prompts per decoder call: one call for typical prompt counts, bounded memory (~25 MB per
# prompt at 64x64 features) for hundreds of proposals.
MAX_BATCH = 16


class SamSegmenter:
    """Encode an image once, then decode N prompts in batched decoder calls (one for N <= 16).

    With ``arch.multimask`` (SAM), a lone box or a single click per prompt takes the best of
    the three ambiguity-aware masks by predicted IoU, as SAM recommends; other prompts (and
    MedSAM / LiteMedSAM always) use the single-mask output.
    """

    def __init__(self, name: str, arch: SamArchitecture, runtime: Runtime,
                 checkpoint: Path | None = None) -> None:
        self.name = name
        self.arch = arch
        self.runtime = runtime
        self.checkpoint = checkpoint
        self.supports_points = arch.supports_points

    @property
    def device(self) -> str:
        """Where the network actually runs ("cpu", "cuda:0"...)."""
        return self.runtime.device

    def __repr__(self) -> str:
        return (f"SamSegmenter(name={self.name!r}, runtime={self.runtime.name!r}, "
                f"preprocess=r{PREPROCESS_REVISION})")

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        model_input, geometry = prepare_image(image, self.arch.input_size,
                                              self.arch.normalisation)
        features = np.ascontiguousarray(self.runtime.encode(model_input), dtype=np.float32)
        return ImageEmbedding(features=features, geometry=geometry, model_name=self.name)

    def predict(
        self,
        embedding: ImageEmbedding,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
    ) -> MaskPrediction:
        self._check(embedding)
        if boxes is None and points is None:
            raise InputError("give boxes (N, 4) and/or points (N, P, 2) to predict masks")
        geometry = embedding.geometry
        coords, labels = prompt_points(geometry, boxes, points, point_labels)
        n = coords.shape[0]
        if n == 0:
            height, width = geometry.original_size
            grid = 4 * self.arch.grid_size
            return MaskPrediction(np.zeros((0, height, width), bool),
                                  np.zeros((0, grid, grid), np.float32),
                                  np.zeros(0, np.float32))
        all_logits, all_iou = self._decode(self.runtime.decode, embedding, coords, labels)
        index = np.zeros(n, dtype=np.int64)
        if self.arch.multimask and self._ambiguous(boxes, points):
            index = 1 + np.argmax(all_iou[:, 1:], axis=1)
        return self._prediction(embedding, all_logits, all_iou, index)

    def refine(self, embedding: ImageEmbedding, boxes: np.ndarray,
               low_res_logits: np.ndarray) -> MaskPrediction:
        """A second round for N box prompts: each box with its first round's (N, 4g, 4g) mask
        logits as a dense prompt, and of the decoder's M outputs the one with the highest
        predicted IoU (SAM's iterative prompting, the output chosen by the model itself)."""
        self._check(embedding)
        coords, labels = prompt_points(embedding.geometry, boxes, None, None)
        logits = np.asarray(low_res_logits, np.float32)[:, None]
        if len(logits) != len(coords):
            raise InputError(f"{len(coords)} boxes but {len(logits)} first-round masks")
        if len(coords) == 0:
            return self.predict(embedding, boxes=np.zeros((0, 4), np.float32))
        all_logits, all_iou = self._decode(self.runtime.decode_masked, embedding, coords,
                                           labels, logits)
        return self._prediction(embedding, all_logits, all_iou, np.argmax(all_iou, axis=1))

    def _check(self, embedding: ImageEmbedding) -> None:
        if embedding.model_name != self.name:
            raise InputError(f"embedding was made by {embedding.model_name}, not {self.name}; "
                             "encode the image with this segmenter")

    @staticmethod
    def _decode(decode: Callable[..., tuple[np.ndarray, np.ndarray]],
                embedding: ImageEmbedding, coords: np.ndarray,
                *per_prompt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``decode`` over (N, ...) prompt arrays in batches of at most ``MAX_BATCH``: all
        (N, M, 4g, 4g) logits and (N, M) IoU estimates."""
        decoded = [decode(embedding.features, coords[i:i + MAX_BATCH],
                          *(a[i:i + MAX_BATCH] for a in per_prompt))
                   for i in range(0, len(coords), MAX_BATCH)]
        return (np.concatenate([logits for logits, _ in decoded]),
                np.concatenate([iou for _, iou in decoded]))

    @staticmethod
    def _prediction(embedding: ImageEmbedding, all_logits: np.ndarray, all_iou: np.ndarray,
                    index: np.ndarray) -> MaskPrediction:
        """Output ``index[k]`` of each prompt k, as masks on the original image."""
        rows = np.arange(len(index))
        low_res = np.ascontiguousarray(all_logits[rows, index], dtype=np.float32)
        scores = np.asarray(all_iou[rows, index], dtype=np.float32)
        masks = embedding.geometry.grid_to_original(low_res) > 0
        return MaskPrediction(masks=masks, low_res_logits=low_res, scores=scores)

    @staticmethod
    def _ambiguous(boxes: np.ndarray | None, points: np.ndarray | None) -> bool:
        """A lone box, or a lone click, per prompt."""
        if points is None:
            return True
        return boxes is None and np.asarray(points).reshape(len(points), -1, 2).shape[1] == 1
