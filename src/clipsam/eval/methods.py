"""The methods ``clipsam eval`` can run, by name.

A :class:`Method` maps (image, reference mask, prompt) to a
:class:`~clipsam.pipelines.base.PipelineResult`; only oracle methods such as ``gt-box`` look
at the reference. :data:`METHODS` is every method of the pipeline registry
(:data:`clipsam.pipelines.registry.PIPELINES`) plus the evaluation-only oracles: a new pipeline
is registered there, a new oracle here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clipsam.config import RunConfig
from clipsam.errors import InputError
from clipsam.pipelines.base import Pipeline, PipelineResult
from clipsam.pipelines.provenance import Provenance, run_identity
from clipsam.pipelines.registry import (
    PIPELINES,
    build_pipeline,
    load_method_models,
    load_segmenter,
)

SegmentFn = Callable[[np.ndarray, np.ndarray, str], PipelineResult]


@dataclass(frozen=True)
class Method:
    """A segmentation method as the harness sees it.

    ``reports_absence``: the method can answer "not found" by itself (scored on empty-reference
    images). ``needs_prompt``: the method reads the text prompt. ``provenance``: what made its
    results (settings key, models, files, device); None for a hand-made method.
    """

    name: str
    segment: SegmentFn
    reports_absence: bool = False
    needs_prompt: bool = False
    provenance: Provenance | None = None


def from_pipeline(pipeline: Pipeline, reports_absence: bool = True, needs_prompt: bool = True,
                  keep_intermediates: bool = False,
                  provenance: Provenance | None = None) -> Method:
    """A pipeline as a method (it never sees the reference mask)."""

    def segment(image: np.ndarray, reference: np.ndarray, prompt: str) -> PipelineResult:
        return pipeline.run(image, prompt, keep_intermediates=keep_intermediates)

    return Method(name=pipeline.name, segment=segment, reports_absence=reports_absence,
                  needs_prompt=needs_prompt, provenance=provenance)


def gt_box(config: RunConfig) -> Method:
    """GT-SAM upper bound: the configured segmenter prompted with boxes around the reference's
    components."""
    from clipsam.eval.gt_box import GtBoxOracle

    identity = run_identity(config, roles=("segmenter",))
    segmenter = load_segmenter(identity.config.models)
    oracle = GtBoxOracle(segmenter)

    def segment(image: np.ndarray, reference: np.ndarray, prompt: str) -> PipelineResult:
        return oracle.run(image, reference, keep_intermediates=config.keep_intermediates)

    return Method(name=oracle.name, segment=segment, provenance=identity.describe(segmenter))


def registered_pipeline(config: RunConfig) -> Method:
    """The registered method ``config.method``, loading only the models it uses."""
    spec = PIPELINES[config.method]
    identity = run_identity(config)
    resolved = identity.config
    models = load_method_models(resolved)
    pipeline = build_pipeline(resolved, models)
    provenance = identity.describe(models and models.segmenter, models and models.text,
                                   pipeline.model if spec.own_model else None)
    return from_pipeline(pipeline, reports_absence=spec.reports_absence,
                         needs_prompt=spec.reads_text,
                         keep_intermediates=config.keep_intermediates, provenance=provenance)


ORACLES: dict[str, Callable[[RunConfig], Method]] = {"gt-box": gt_box}
METHODS: dict[str, Callable[[RunConfig], Method]] = {
    **dict.fromkeys(PIPELINES, registered_pipeline), **ORACLES}


def build_method(name: str, config: RunConfig) -> Method:
    """The method registered as ``name``, built for ``config`` run as that method."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name](dataclasses.replace(config, method=name))
