"""What a "segment everything" stage returns: candidate masks with their quality measures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Proposals:
    """N candidate masks of one image, best first.

    ``masks`` (N, H, W) bool at the original image size; ``boxes`` (N, 4) float32 tight xyxy boxes
    (x1, y1 inclusive, x2, y2 exclusive, see :mod:`clipsam.postprocess.boxes`); ``scores`` (N,)
    the segmenter's predicted IoU; ``stability`` (N,) the stability score; ``areas`` (N,) pixels.
    """

    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    stability: np.ndarray
    areas: np.ndarray

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    def take(self, indices: np.ndarray) -> Proposals:
        """The proposals at ``indices`` (int positions or a bool selector), in that order."""
        return Proposals(self.masks[indices], self.boxes[indices], self.scores[indices],
                         self.stability[indices], self.areas[indices])

    @staticmethod
    def empty(image_size: tuple[int, int]) -> Proposals:
        """No proposals for an (H, W) image."""
        return Proposals(np.zeros((0, *image_size), bool), np.zeros((0, 4), np.float32),
                         np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @staticmethod
    def concatenate(parts: list[Proposals], image_size: tuple[int, int]) -> Proposals:
        """All proposals of ``parts`` in order (an empty list gives no proposals)."""
        if not parts:
            return Proposals.empty(image_size)
        return Proposals(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                           ("masks", "boxes", "scores", "stability", "areas")))
