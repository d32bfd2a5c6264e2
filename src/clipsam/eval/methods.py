"""The methods ``clipsam eval`` can run, by name.

A :class:`Method` maps (image, reference mask, prompt) to a
:class:`~clipsam.pipelines.base.SegmentationResult`; only oracle methods such as ``gt-box`` look
at the reference. To add a method, add one line to :data:`METHODS` with a factory that builds it
from the shared :class:`~clipsam.config.RunConfig` (for a
:class:`~clipsam.pipelines.base.Pipeline`, wrap it with :func:`from_pipeline`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clipsam.config import RunConfig
from clipsam.errors import InputError
from clipsam.pipelines.base import Pipeline, SegmentationResult

SegmentFn = Callable[[np.ndarray, np.ndarray, str], SegmentationResult]


@dataclass(frozen=True)
class Method:
    """A segmentation method as the harness sees it.

    ``reports_absence``: the method can answer "not found" by itself (scored on empty-reference
    images). ``needs_prompt``: the method reads the text prompt.
    """

    name: str
    segment: SegmentFn
    reports_absence: bool = False
    needs_prompt: bool = False


def from_pipeline(pipeline: Pipeline, reports_absence: bool = True) -> Method:
    """A text-prompted pipeline as a method (it never sees the reference mask)."""

    def segment(image: np.ndarray, reference: np.ndarray, prompt: str) -> SegmentationResult:
        return pipeline.run(image, prompt)

    return Method(name=pipeline.name, segment=segment, reports_absence=reports_absence,
                  needs_prompt=True)


def gt_box(config: RunConfig) -> Method:
    """GT-SAM upper bound: the configured segmenter prompted with boxes around the reference's
    components."""
    from clipsam.models.sam import load_litemedsam, load_sam
    from clipsam.pipelines.gt_box import GtBoxPipeline

    models = config.models
    segmenter = (load_litemedsam(runtime=models.runtime) if models.segmenter == "litemedsam"
                 else load_sam(models.segmenter, weights_dir=models.weights_dir,
                               runtime=models.runtime))
    pipeline = GtBoxPipeline(segmenter)

    def segment(image: np.ndarray, reference: np.ndarray, prompt: str) -> SegmentationResult:
        return pipeline.run(image, reference)

    return Method(name=pipeline.name, segment=segment)


def weak(config: RunConfig) -> Method:
    """A network trained by ``clipsam weak-train`` (folder ``config.weak_model``)."""
    from clipsam.pipelines.weak import WeakPipeline

    if config.weak_model is None:
        raise InputError("method 'weak' needs --model MODEL_DIR (a folder from clipsam weak-train)")
    return from_pipeline(WeakPipeline(config.weak_model))


METHODS: dict[str, Callable[[RunConfig], Method]] = {
    "gt-box": gt_box,
    "weak": weak,
}


def build_method(name: str, config: RunConfig) -> Method:
    """The method registered as ``name``, built for ``config``."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name](config)
