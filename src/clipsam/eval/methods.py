"""The methods ``clipsam eval`` can run, by name.

A :class:`Method` maps (image, reference mask, prompt) to a
:class:`~clipsam.pipelines.base.PipelineResult`; only oracle methods such as ``gt-box`` look
at the reference. :data:`METHODS` is every method of the pipeline registry
(:data:`clipsam.pipelines.registry.PIPELINES`) plus the evaluation-only oracles: a new pipeline
is registered there, a new oracle here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from clipsam.config import RunConfig, VolumeConfig
from clipsam.errors import InputError
from clipsam.io.image import MedicalImage, segmenter_input
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.pipelines.base import Pipeline, PipelineResult
from clipsam.pipelines.provenance import Provenance, run_identity
from clipsam.pipelines.registry import (
    PIPELINES,
    build_pipeline,
    load_method_models,
    load_segmenter,
)
from clipsam.pipelines.volume import (
    SliceEvidence,
    VolumeOutcome,
    VolumeSettings,
    VolumeTracker,
    drain,
)
from clipsam.pipelines.volume import segment_volume as volume_segmentation

SegmentFn = Callable[[np.ndarray, np.ndarray, str], PipelineResult]
VolumeFn = Callable[[MedicalImage, np.ndarray, str, Callable[[int], None] | None],
                    VolumeOutcome]
"""(volume, (Z, H, W) reference, prompt, progress(slices done)) -> the volume's answer."""


@dataclass(frozen=True)
class Method:
    """A segmentation method as the harness sees it.

    ``reports_absence``: the method can answer "not found" by itself (scored on empty-reference
    images). ``needs_prompt``: the method reads the text prompt. ``provenance``: what made its
    results (settings key, models, files, device); None for a hand-made method.
    ``segment_volume``: how it answers for a whole volume (None: it cannot).
    """

    name: str
    segment: SegmentFn
    reports_absence: bool = False
    needs_prompt: bool = False
    provenance: Provenance | None = None
    segment_volume: VolumeFn | None = None


def from_pipeline(pipeline: Pipeline, reports_absence: bool = True, needs_prompt: bool = True,
                  keep_intermediates: bool = False,
                  provenance: Provenance | None = None,
                  segmenter: PromptableSegmenter | None = None,
                  volume: VolumeConfig | None = None) -> Method:
    """A pipeline as a method (it never sees the reference mask); a volume is encoded slice by
    slice with ``segmenter`` (None: the method reads no embedding) and segmented as ``volume``
    says (:func:`clipsam.pipelines.volume.segment_volume`)."""

    def segment(image: np.ndarray, reference: np.ndarray, prompt: str) -> PipelineResult:
        return pipeline.run(image, prompt, keep_intermediates=keep_intermediates)

    def embed(plane: np.ndarray) -> tuple[ImageEmbedding | None, float]:
        if segmenter is None:
            return None, 0.0
        start = time.perf_counter()
        embedding = segmenter.encode(plane)
        return embedding, time.perf_counter() - start

    def segment_volume(image: MedicalImage, reference: np.ndarray, prompt: str,
                       progress: Callable[[int], None] | None = None) -> VolumeOutcome:
        stream = volume_segmentation(pipeline, slice_planes(image), [prompt],
                                     volume or VolumeConfig(), embed, keep_intermediates)
        return drain(stream, progress)[0]

    return Method(name=pipeline.name, segment=segment, reports_absence=reports_absence,
                  needs_prompt=needs_prompt, provenance=provenance,
                  segment_volume=segment_volume)


def slice_planes(image: MedicalImage) -> Iterator[np.ndarray]:
    """The planes a segmenter is given, one slice at a time."""
    for index in range(image.num_slices):
        yield segmenter_input(image.slice(index))


def gt_box(config: RunConfig) -> Method:
    """GT-SAM upper bound: the configured segmenter prompted with boxes around the reference's
    components."""
    from clipsam.eval.gt_box import GtBoxOracle

    identity = run_identity(config, roles=("segmenter",))
    segmenter = load_segmenter(identity.config.models)
    oracle = GtBoxOracle(segmenter)

    def segment(image: np.ndarray, reference: np.ndarray, prompt: str) -> PipelineResult:
        return oracle.run(image, reference, keep_intermediates=config.keep_intermediates)

    def segment_volume(image: MedicalImage, reference: np.ndarray, prompt: str,
                       progress: Callable[[int], None] | None = None) -> VolumeOutcome:
        """Each slice from the boxes of its own reference (the bound of a per-slice cascade)."""
        tracker = VolumeTracker(VolumeSettings("slices"), prompt, oracle.name)
        for index, plane in enumerate(slice_planes(image)):
            result = oracle.run(plane, reference[index])
            tracker.add(None, result, SliceEvidence(float(result.found), 0.5, "found"))
            if progress is not None:
                progress(index + 1)
        return tracker.finish()

    return Method(name=oracle.name, segment=segment, provenance=identity.describe(segmenter),
                  segment_volume=segment_volume)


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
                         keep_intermediates=config.keep_intermediates, provenance=provenance,
                         segmenter=models.segmenter if models else None, volume=config.volume)


ORACLES: dict[str, Callable[[RunConfig], Method]] = {"gt-box": gt_box}
METHODS: dict[str, Callable[[RunConfig], Method]] = {
    **dict.fromkeys(PIPELINES, registered_pipeline), **ORACLES}


def build_method(name: str, config: RunConfig) -> Method:
    """The method registered as ``name``, built for ``config`` run as that method."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name](dataclasses.replace(config, method=name))
