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


def from_pipeline(pipeline: Pipeline, reports_absence: bool = True, needs_prompt: bool = True,
                  keep_intermediates: bool = False) -> Method:
    """A pipeline as a method (it never sees the reference mask)."""

    def segment(image: np.ndarray, reference: np.ndarray, prompt: str) -> SegmentationResult:
        return pipeline.run(image, prompt, keep_intermediates=keep_intermediates)

    return Method(name=pipeline.name, segment=segment, reports_absence=reports_absence,
                  needs_prompt=needs_prompt)


def gt_box(config: RunConfig) -> Method:
    """GT-SAM upper bound: the configured segmenter prompted with boxes around the reference's
    components."""
    from clipsam.pipelines.gt_box import GtBoxPipeline
    from clipsam.pipelines.registry import load_segmenter

    pipeline = GtBoxPipeline(load_segmenter(config.models))

    def segment(image: np.ndarray, reference: np.ndarray, prompt: str) -> SegmentationResult:
        return pipeline.run(image, reference, keep_intermediates=config.keep_intermediates)

    return Method(name=pipeline.name, segment=segment)


def registered_pipeline(config: RunConfig) -> Method:
    """Any method of :data:`clipsam.pipelines.registry.PIPELINES`, built from ``config``."""
    from clipsam.pipelines.registry import TEXT_FREE_METHODS, build_pipeline, load_models

    text_free = config.method in TEXT_FREE_METHODS
    models = load_models(config.models, with_text=not text_free)
    return from_pipeline(build_pipeline(config, models), reports_absence=not text_free,
                         needs_prompt=not text_free,
                         keep_intermediates=config.keep_intermediates)


def weak(config: RunConfig) -> Method:
    """A network trained by ``clipsam weak-train`` (folder ``config.weak_model``); it needs no
    segmenter or text model, so none is loaded."""
    from clipsam.pipelines.registry import weak_pipeline

    return from_pipeline(weak_pipeline(config), keep_intermediates=config.keep_intermediates)


METHODS: dict[str, Callable[[RunConfig], Method]] = {
    "gt-box": gt_box,
    "medclipsam": registered_pipeline,
    "salip": registered_pipeline,
    "unprompted": registered_pipeline,
    "whole-box": registered_pipeline,
    "weak": weak,
}


def build_method(name: str, config: RunConfig) -> Method:
    """The method registered as ``name``, built for ``config``."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name](config)
