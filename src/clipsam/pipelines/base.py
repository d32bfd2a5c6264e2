"""What every pipeline returns, and the interface pipelines implement."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from clipsam.models.segmenter import ImageEmbedding


@dataclass(frozen=True)
class PipelineResult:
    """What a pipeline returns: the mask for one prompt on one image, with what produced it.

    (The public API wraps it, with geometry and provenance, in :class:`clipsam.api.SegmentResult`.)

    ``found`` is False when the pipeline decided the target is absent; ``mask`` is then empty.
    ``boxes`` are the (K, 4) xyxy prompts given to the segmenter, in original pixels.
    ``timings`` are seconds per stage; ``intermediates`` holds optional views (proposals,
    crop scores, saliency maps) kept only when asked for. ``decisions`` are the settings the
    pipeline resolved for this prompt (e.g. the calibrated mask source, map level and box
    margin of its concept), always recorded.
    """

    mask: np.ndarray
    found: bool
    boxes: np.ndarray
    scores: np.ndarray
    prompt: str
    method: str
    timings: dict[str, float] = field(default_factory=dict)
    intermediates: dict[str, Any] = field(default_factory=dict)
    decisions: dict[str, Any] = field(default_factory=dict)


class Pipeline(Protocol):
    """A method that turns (image, prompt) into a mask, reusing a precomputed embedding."""

    name: str

    def run(
        self,
        image: np.ndarray,
        prompt: str,
        embedding: ImageEmbedding | None = None,
        keep_intermediates: bool = False,
    ) -> PipelineResult:
        ...
