"""A volume (MRI, CT): one answer for the whole stack of slices, slice by slice or consistently
along the slice axis (:class:`clipsam.config.VolumeConfig`).

Slices are streamed: each is encoded once and run through the pipeline once, as a 2-D image,
and then only its answer is kept (mask, boxes, presence score). In ``consistent`` mode a slice
is settled once the slices it depends on have been seen (``smoothing`` radius plus ``reach``
later), so at most that many embeddings are held; settling decodes propagated boxes, nothing
is encoded twice. After the last slice the runs are decided and the 3-D clean-up made.

The rules (``consistent``), per prompt, with ``t`` the prompt's "not found" threshold:

* presence with context: the per-slice presence scores are smoothed along the slice axis (a
  two-sided Gaussian); slices whose smoothed score reaches ``t`` form runs; a run holds when its
  peak smoothed score reaches ``t`` raised by ``hold`` logits; slices outside held runs get no
  mask, and the volume is "not found" when no run holds;
* a slice is *confident* when its own score reaches ``t`` and its own answer has a mask; a
  slice of a held run that is not confident takes box prompts from the mask of the nearest
  confident slice of its run at most ``reach`` slices away (both, united, at equal distance):
  one box per component, each side grown by ``margin`` of its size, decoded on its own
  embedding (box propagation);
* clean-up: 3-D components of the volume's mask with no voxel on a confident slice are dropped.

A slice's presence score and threshold are those its answer records in ``decisions``
(``presence``, ``threshold``: the concept the prompt reached, at the run's presence operating
point; see :func:`slice_evidence`); a pipeline that records none is scored by whether the slice
was found. A pipeline decodes propagated boxes through an optional ``box_decoder(prompt)``
method (a :data:`~clipsam.pipelines.common.BoxDecoder` for boxes given from outside, or None
when it decodes no boxes for the prompt); without one, nothing is propagated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from clipsam.config import VolumeConfig
from clipsam.models.segmenter import ImageEmbedding
from clipsam.pipelines.base import Pipeline, PipelineResult
from clipsam.pipelines.common import BoxDecoder
from clipsam.pipelines.timing import StageTimer, checkpoint
from clipsam.postprocess.boxes import component_boxes, expand_boxes
from clipsam.postprocess.volume import (
    anchored_components,
    major_components,
    runs,
    smooth_at,
    smoothing_radius,
)

Embed = Callable[[np.ndarray], tuple[ImageEmbedding | None, float]]
"""A plane -> its embedding (None for a method that reads none) and the seconds spent encoding."""

NEUTRAL = {"smoothing": 0.0, "hold": 0.0, "reach": 0, "margin": 0.0, "cleanup": False,
           "min_component": 0.0}
"""The settings under which ``consistent`` gives the masks of ``slices``: used, with a recorded
warning, for a setting neither the configuration nor the text model gives."""


@dataclass(frozen=True)
class VolumeSettings:
    """Resolved :class:`~clipsam.config.VolumeConfig` (every value set); ``origin`` says where
    each value came from (``config``, ``calibrated`` or ``default``)."""

    mode: str
    smoothing: float = 0.0
    hold: float = 0.0
    reach: int = 0
    margin: float = 0.0
    cleanup: bool = False
    min_component: float = 0.0
    origin: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def lag(self) -> int:
        """How many later slices must be in before a slice can be settled."""
        return smoothing_radius(self.smoothing) + self.reach

    def record(self) -> dict[str, Any]:
        """The settings as recorded in a result's ``decisions["volume"]``."""
        if self.mode == "slices":
            return {"mode": "slices"}
        values = {name: getattr(self, name) for name in NEUTRAL}
        return {"mode": self.mode, **values, "from": dict(self.origin),
                **({"warnings": list(self.warnings)} if self.warnings else {})}


def resolve_settings(config: VolumeConfig, calibrated: Mapping[str, Any] | None) -> VolumeSettings:
    """Each setting from ``config`` when it gives one, else from the text model's calibrated
    ``volume`` block, else :data:`NEUTRAL` (with a warning naming the settings so filled)."""
    if config.mode == "slices":
        return VolumeSettings(mode="slices")
    calibrated = dict(calibrated or {})
    values, origin, missing = {}, {}, []
    for name, neutral in NEUTRAL.items():
        given = getattr(config, name)
        if given is not None:
            values[name], origin[name] = given, "config"
        elif calibrated.get(name) is not None:
            values[name], origin[name] = calibrated[name], "calibrated"
        else:
            values[name], origin[name] = neutral, "default"
            missing.append(name)
    warnings = ()
    if missing:
        warnings = (f"the text model has no calibrated volume setting for {', '.join(missing)}: "
                    "the values that equal slice-by-slice segmentation are used",)
    checked = replace(config, **values)  # VolumeConfig validates the ranges
    return VolumeSettings(mode=config.mode, smoothing=float(checked.smoothing),
                          hold=float(checked.hold), reach=int(checked.reach),
                          margin=float(checked.margin), cleanup=bool(checked.cleanup),
                          min_component=float(checked.min_component), origin=origin,
                          warnings=warnings)


def calibrated_volume(pipeline: Pipeline) -> Mapping[str, Any] | None:
    """The ``volume`` block of the pipeline's text model (a grounding model's calibration), or
    None when it has none."""
    volume = getattr(getattr(pipeline, "text_model", None), "volume", None)
    return volume if isinstance(volume, Mapping) and volume else None


@dataclass(frozen=True)
class SliceEvidence:
    """How strongly a slice shows the target: ``score`` against ``threshold`` (a presence
    probability and the prompt's "not found" threshold, or 1/0 for found/not found against
    0.5), and which of the two (``kind``: ``score`` or ``found``)."""

    score: float
    threshold: float
    kind: str


def slice_evidence(result: PipelineResult) -> SliceEvidence:
    """The presence score and threshold the slice's answer recorded in its ``decisions``
    (``presence``, ``threshold``), else whether the slice's own answer found the target."""
    recorded = result.decisions
    if recorded.get("presence") is not None and recorded.get("threshold") is not None:
        return SliceEvidence(float(recorded["presence"]), float(recorded["threshold"]), "score")
    return SliceEvidence(1.0 if result.found else 0.0, 0.5, "found")


def decoder_for(pipeline: Pipeline, prompt: str) -> BoxDecoder | None:
    """How the pipeline decodes propagated boxes for ``prompt`` (its ``box_decoder`` method),
    or None when it decodes no boxes for it."""
    box_decoder = getattr(pipeline, "box_decoder", None)
    return box_decoder(prompt) if box_decoder is not None else None


@dataclass(frozen=True)
class VolumeOutcome:
    """One prompt's answer for a volume: the (Z, H, W) ``mask``, ``found``, the (K, 5) boxes
    ``(slice, x1, y1, x2, y2)`` that were decoded for it and their (K,) ``scores``, the
    ``decisions`` (the slices' shared ones and ``volume``), ``timings`` (seconds per stage,
    summed over slices) and ``intermediates`` (when kept: the slices' views of the mask's size
    stacked, ``presence`` and ``smoothed_presence`` per slice)."""

    mask: np.ndarray
    found: bool
    boxes: np.ndarray
    scores: np.ndarray
    prompt: str
    method: str
    decisions: dict[str, Any]
    timings: dict[str, float]
    intermediates: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Slice:
    """What is kept of one slice's own answer."""

    mask: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    evidence: SliceEvidence
    confident: bool
    decisions: dict[str, Any]
    views: dict[str, Any]


class VolumeTracker:
    """One prompt's slices, added in order (:meth:`add`), settled as soon as possible and
    joined into a :class:`VolumeOutcome` by :meth:`finish`."""

    def __init__(self, settings: VolumeSettings, prompt: str, method: str,
                 decode: BoxDecoder | None = None, keep_views: bool = False) -> None:
        self.settings = settings
        self.keep_views = keep_views
        self.prompt = prompt
        self.method = method
        self.decode = decode if settings.reach > 0 else None
        self.slices: list[_Slice] = []
        self.scores: list[float] = []
        self.final: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.propagated: list[int] = []
        self.timer = StageTimer()
        self.slice_timings: dict[str, float] = {}
        self._embeddings: dict[int, ImageEmbedding] = {}
        self._in_run: dict[int, bool] = {}

    def add(self, embedding: ImageEmbedding | None, result: PipelineResult,
            evidence: SliceEvidence) -> None:
        """The next slice's own answer, the embedding it was made from and its evidence."""
        mask = np.asarray(result.mask, bool)
        confident = evidence.score >= evidence.threshold and bool(mask.any())
        index = len(self.slices)
        self.scores.append(evidence.score)
        self.slices.append(_Slice(mask, np.asarray(result.boxes, np.float32).reshape(-1, 4),
                                  np.asarray(result.scores, np.float32).reshape(-1), evidence,
                                  confident, dict(result.decisions), dict(result.intermediates)))
        timings = {"total": sum(result.timings.values()), **result.timings}
        for stage, seconds in timings.items():
            self.slice_timings[stage] = self.slice_timings.get(stage, 0.0) + float(seconds)
        if self.decode is not None and not confident and embedding is not None:
            self._embeddings[index] = embedding
        while len(self.final) + self.settings.lag < len(self.slices):
            self._settle(len(self.final))

    def finish(self) -> VolumeOutcome:
        """Settle the last slices, decide the runs, clean up; the volume's answer."""
        if not self.slices:
            raise ValueError("a volume needs at least one slice")
        while len(self.final) < len(self.slices):
            self._settle(len(self.final))
        volume = self.settings.record()
        with self.timer("volume"):
            mask = np.stack([final[0] for final in self.final])
            anchors = np.zeros(len(mask), bool)
            if self.settings.mode == "consistent":
                held, volume["runs"] = self._held_runs()
                mask[~held] = False
                anchors = held & np.array([s.confident for s in self.slices])
                volume["propagated_slices"] = [z for z in self.propagated if held[z]]
                if self.settings.cleanup:
                    mask, volume["dropped_components"] = anchored_components(mask, anchors)
                mask, volume["dropped_minor_components"] = major_components(
                    mask, self.settings.min_component)
                volume["presence"] = self.slices[0].evidence.kind
        boxes = [np.column_stack([np.full(len(b), z, np.float32), b])
                 for z, (m, b, _) in enumerate(self.final) if mask[z].any()]
        scores = [s for z, (m, _, s) in enumerate(self.final) if mask[z].any()]
        timings = {**self.slice_timings, **self.timer.seconds}
        timings["total"] = self.slice_timings.get("total", 0.0) + sum(self.timer.seconds.values())
        return VolumeOutcome(
            mask=mask, found=bool(mask.any()),
            boxes=np.concatenate(boxes).reshape(-1, 5) if boxes else np.zeros((0, 5), np.float32),
            scores=np.concatenate(scores) if scores else np.zeros(0, np.float32),
            prompt=self.prompt, method=self.method,
            decisions={**self._shared_decisions(), "volume": volume},
            timings=timings, intermediates=self._views(mask.shape))

    # --- settling -------------------------------------------------------------------------

    def _settle(self, z: int) -> None:
        """Decide slice ``z``'s mask before the runs are known: its own answer (slices mode,
        or a confident slice of a run), a propagated one, or nothing."""
        own = self.slices[z]
        empty = (np.zeros_like(own.mask), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        if self.settings.mode == "slices":
            self.final.append((own.mask, own.boxes, own.scores))
        elif not self.in_run(z):
            self.final.append(empty)
        elif own.confident:
            self.final.append((own.mask, own.boxes, own.scores))
        else:
            self.final.append(self._propagate(z) or empty)
        self._embeddings.pop(z, None)

    def in_run(self, z: int) -> bool:
        """Whether slice ``z``'s smoothed score reaches the threshold (needs the slices up to
        the smoothing radius after it, or the end of the volume)."""
        if z not in self._in_run:
            smoothed = smooth_at(self.scores, z, self.settings.smoothing)
            self._in_run[z] = smoothed >= self.slices[z].evidence.threshold
        return self._in_run[z]

    def _propagate(self, z: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Slice ``z``'s mask from the boxes of its nearest confident slices in its run."""
        embedding = self._embeddings.get(z)
        if self.decode is None or embedding is None:
            return None
        for distance in range(1, self.settings.reach + 1):
            sources = [c for c in (z - distance, z + distance) if self._source(z, c)]
            if sources:
                break
        else:
            return None
        union = np.logical_or.reduce([self.slices[c].mask for c in sources])
        boxes = expand_boxes(component_boxes(union), union.shape, fraction=self.settings.margin)
        with self.timer("propagate"):
            mask, scores = self.decode(embedding, boxes, StageTimer())
        if not np.asarray(mask).any():
            return None
        self.propagated.append(z)
        return np.asarray(mask, bool), boxes, np.asarray(scores, np.float32).reshape(-1)

    def _source(self, z: int, c: int) -> bool:
        """Whether slice ``c`` is confident and in the same run as ``z``."""
        if not 0 <= c < len(self.slices) or not self.slices[c].confident:
            return False
        return all(self.in_run(b) for b in range(min(z, c), max(z, c) + 1))

    # --- the whole volume -----------------------------------------------------------------

    def _held_runs(self) -> tuple[np.ndarray, list[list]]:
        """(Z,) whether each slice lies in a held run, and every run as ``[first, last, peak
        smoothed score, held]``."""
        scores = np.asarray(self.scores)
        threshold = self.slices[0].evidence.threshold
        level = _raise_logit(threshold, self.settings.hold)
        flags = np.array([self.in_run(z) for z in range(len(self.slices))])
        held = np.zeros(len(flags), bool)
        described = []
        for first, stop in runs(flags):
            peak = max(smooth_at(scores, z, self.settings.smoothing) for z in range(first, stop))
            holds = peak >= level
            held[first:stop] = holds
            described.append([first, stop - 1, round(peak, 4), bool(holds)])
        return held, described

    def _shared_decisions(self) -> dict[str, Any]:
        """The decisions every slice that made any agrees on (a decision that differs between
        slices, e.g. the level used where a map stays low, is left out)."""
        decided = [s.decisions for s in self.slices if s.decisions]
        if not decided:
            return {}
        return {k: v for k, v in decided[0].items() if all(d.get(k) == v for d in decided)}

    def _views(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """With ``keep_views``: the views of the mask's size that every slice kept, stacked,
        and the presence scores."""
        if not self.keep_views:
            return {}
        shared = set.intersection(*(set(s.views) for s in self.slices))
        views = {k: np.stack([s.views[k] for s in self.slices]) for k in sorted(shared)
                 if all(np.shape(s.views[k]) == shape[1:] for s in self.slices)}
        scores = np.asarray(self.scores, np.float32)
        views["presence"] = scores
        if self.settings.mode == "consistent":
            views["smoothed_presence"] = np.array(
                [smooth_at(scores, z, self.settings.smoothing) for z in range(len(scores))],
                np.float32)
        return views


def _raise_logit(probability: float, logits: float) -> float:
    """``probability`` moved up by ``logits`` on the logit scale."""
    if logits == 0:
        return probability
    p = min(max(probability, 1e-6), 1 - 1e-6)
    return 1.0 / (1.0 + math.exp(-(math.log(p / (1 - p)) + logits)))


def segment_volume(
    pipeline: Pipeline,
    planes: Iterable[np.ndarray],
    prompts: Sequence[str],
    config: VolumeConfig,
    embed: Embed,
    keep_intermediates: bool = False,
) -> Generator[int, None, list[VolumeOutcome]]:
    """Segment the planes of a volume for every prompt; yields the number of slices done after
    each slice and returns one :class:`VolumeOutcome` per prompt.

    ``embed`` encodes a plane once (every prompt reuses it). The first prompt's timings carry
    the encoder's seconds (``encode``).
    """
    settings = resolve_settings(config, calibrated_volume(pipeline))
    per_prompt = [VolumeTracker(settings, prompt, pipeline.name, decoder_for(pipeline, prompt),
                                keep_intermediates) for prompt in prompts]
    encode_seconds = 0.0
    for index, plane in enumerate(planes):
        checkpoint()
        embedding, seconds = embed(plane)
        encode_seconds += seconds
        for prompt, tracker in zip(prompts, per_prompt, strict=True):
            checkpoint()
            result = pipeline.run(plane, prompt, embedding=embedding,
                                  keep_intermediates=keep_intermediates)
            tracker.add(embedding, result, slice_evidence(result))
        yield index + 1
    outcomes = [tracker.finish() for tracker in per_prompt]
    first = outcomes[0]
    timings = {"encode": encode_seconds, **first.timings,
               "total": first.timings["total"] + encode_seconds}
    return [replace(first, timings=timings), *outcomes[1:]]



def drain(stream: Generator[Any, None, Any],
          progress: Callable[[Any], None] | None = None) -> Any:
    """Run a generator such as :func:`segment_volume` to its end, handing each yielded value
    to ``progress``; its return value."""
    while True:
        try:
            value = next(stream)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(value)
