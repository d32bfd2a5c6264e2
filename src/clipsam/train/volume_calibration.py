"""Calibrating a grounding model's volume settings (:class:`clipsam.config.VolumeConfig`) on
development volumes that are never scored.

Each volume is streamed once, as users run it: every slice is encoded once and answered once by
the MedCLIP-SAM pipeline, and that answer is fed to one
:class:`~clipsam.pipelines.volume.VolumeTracker` per candidate setting (they share the slice's
embedding; a propagated box set is decoded once per slice). Each candidate's per-volume Dice
then decides, one group of settings at a time, with the project's one chooser
(:func:`clipsam.train.calibrate.choose_setting`: the best mean Dice over the volumes, kept only
when it beats the group's default by ``min_gain``), among the candidates that keep slice
detection: a candidate whose pooled slice recall (the share of the volumes' slices holding the
target that its mask reaches) falls more than ``max_recall_loss`` below slice-by-slice's is
never chosen, however high its Dice (a clean-up that keeps a large false component and drops
the target scores well on volumes where the target is large and loses it where it is not):

1. smoothing x propagation: ``smoothing`` x ``reach`` x ``margin`` together (every run holds,
   no clean-up): smoothing alone only brings into runs weak slices that have no mask of their
   own, propagation only reaches weak slices that smoothing brought in, so either is measured
   only with the other;
2. ``hold``, with those;
3. clean-up on or off, with all three;
4. ``min_component`` (components smaller than that fraction of the largest are dropped), with
   all four: it applies last, to the finished mask, so each candidate is that of step 3's
   masks filtered (:func:`clipsam.postprocess.volume.major_components`), not streamed again.

Each group's default is the value under which ``consistent`` gives the masks of ``slices``
(:data:`clipsam.pipelines.volume.NEUTRAL`). The settings are model-wide (every concept's
threshold is its own, the rules are relative to it); the report records the volumes, the
prompt and every candidate's mean Dice and pooled slice recall, and which were ruled out.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipsam.eval.metrics import SliceDetection, dice, slice_detection
from clipsam.io.image import MedicalImage, segmenter_input
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.pipelines.base import Pipeline
from clipsam.pipelines.common import BoxDecoder
from clipsam.pipelines.timing import StageTimer
from clipsam.pipelines.volume import (
    NEUTRAL,
    VolumeSettings,
    VolumeTracker,
    decoder_for,
    slice_evidence,
)
from clipsam.postprocess.volume import major_components
from clipsam.train.calibrate import choose_setting

Key = tuple[float, float, int, float, bool, float]
"""(smoothing, hold, reach, margin, cleanup, min_component)."""
DEFAULT: Key = tuple(NEUTRAL.values())  # type: ignore[assignment]


@dataclass(frozen=True)
class VolumeCalibrationConfig:
    """The candidates of each group (each must include its neutral value), the gain in mean
    per-volume Dice another value needs over the group's default to be chosen, and how much
    pooled slice recall a candidate may lose against slice-by-slice and still be chosen."""

    smoothings: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    holds: tuple[float, ...] = (0.0, 1.0, 2.0)
    reaches: tuple[int, ...] = (0, 1, 2)
    margins: tuple[float, ...] = (0.0, 0.1, 0.2)
    min_components: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5)
    min_gain: float = 0.01
    max_recall_loss: float = 0.02

    def candidates(self) -> list[Key]:
        """Every combination (one with ``reach`` 0 per presence setting: no margin applies)."""
        keys = []
        for smoothing, hold, reach, margin, cleanup, minimum in itertools.product(
                self.smoothings, self.holds, self.reaches, self.margins, (False, True),
                self.min_components):
            if reach == 0 and margin != NEUTRAL["margin"]:
                continue
            keys.append((float(smoothing), float(hold), int(reach), float(margin), cleanup,
                         float(minimum)))
        return keys


def _settings(key: Key) -> VolumeSettings:
    """The settings of a candidate, streamed without ``min_component`` (applied afterwards)."""
    smoothing, hold, reach, margin, cleanup, _ = key
    return VolumeSettings("consistent", smoothing=smoothing, hold=hold, reach=reach,
                          margin=margin, cleanup=cleanup)


def _shared_decoder(decode: BoxDecoder | None) -> BoxDecoder | None:
    """``decode``, remembering its answer per embedding and box set (candidates propagating the
    same boxes to the same slice decode once)."""
    if decode is None:
        return None
    answers: dict[tuple[int, bytes], tuple[weakref.ref, tuple[np.ndarray, np.ndarray]]] = {}

    def shared(embedding: ImageEmbedding, boxes: np.ndarray,
               timer: StageTimer) -> tuple[np.ndarray, np.ndarray]:
        key = (id(embedding), np.asarray(boxes, np.float32).tobytes())
        if key not in answers or answers[key][0]() is not embedding:  # ids are reused
            answers[key] = (weakref.ref(embedding), decode(embedding, boxes, timer))
        return answers[key][1]

    return shared


@dataclass(frozen=True)
class VolumeScore:
    """One candidate on one volume: its 3-D Dice and slice detection."""

    dice: float
    slices: SliceDetection


def volume_scores(
    pipeline: Pipeline,
    segmenter: PromptableSegmenter,
    image: MedicalImage,
    reference: np.ndarray,
    prompt: str,
    keys: list[Key],
) -> dict[Key, VolumeScore]:
    """Every candidate's score on one volume, from one pass over its slices (one tracker per
    candidate but ``min_component``, whose values filter the tracker's mask)."""
    decode = _shared_decoder(decoder_for(pipeline, prompt))
    trackers = {key[:5]: VolumeTracker(_settings(key), prompt, pipeline.name, decode)
                for key in keys}
    for index in range(image.num_slices):
        plane = segmenter_input(image.slice(index))
        embedding = segmenter.encode(plane)
        result = pipeline.run(plane, prompt, embedding=embedding)
        evidence = slice_evidence(result)
        for tracker in trackers.values():
            tracker.add(embedding, result, evidence)
    masks = {base: tracker.finish().mask for base, tracker in trackers.items()}
    scores = {}
    for key in keys:
        mask = major_components(masks[key[:5]], key[5])[0]
        scores[key] = VolumeScore(dice(mask, reference), slice_detection(mask, reference))
    return scores


def choose_volume_settings(per_volume: dict[str, dict[Key, VolumeScore]],
                           config: VolumeCalibrationConfig) -> tuple[dict[str, Any], dict]:
    """The chosen settings (a ``volume`` block) and the report of the four steps, from every
    candidate's score per volume (candidates losing more than ``max_recall_loss`` of pooled
    slice recall against :data:`DEFAULT` are ruled out)."""
    keys = list(next(iter(per_volume.values())))
    means = {key: float(np.mean([scores[key].dice for scores in per_volume.values()]))
             for key in keys}
    recall = {}
    for key in keys:
        hit = sum(scores[key].slices.hit for scores in per_volume.values())
        ref = sum(scores[key].slices.ref for scores in per_volume.values())
        recall[key] = hit / ref if ref else 1.0
    allowed = {key for key in keys if recall[key] >= recall[DEFAULT] - config.max_recall_loss}

    def step(pick: Callable[[Key], tuple | None], default: tuple) -> tuple[tuple, dict]:
        group = {pick(key): key for key in keys if pick(key) is not None}
        chosen = choose_setting({value: means[key] for value, key in group.items()
                                 if key in allowed}, default, config.min_gain)
        return chosen, group

    (smoothing, reach, margin), propagation = step(
        lambda k: (k[0], k[2], k[3]) if (k[1], *k[4:]) == (DEFAULT[1], *DEFAULT[4:]) else None,
        (DEFAULT[0], DEFAULT[2], DEFAULT[3]))
    (hold,), presence = step(
        lambda k: (k[1],) if (k[0], k[2], k[3], *k[4:]) == (smoothing, reach, margin,
                                                            *DEFAULT[4:]) else None,
        (DEFAULT[1],))
    (cleanup,), clean = step(
        lambda k: (k[4],) if (*k[:4], k[5]) == (smoothing, hold, reach, margin, DEFAULT[5])
        else None, (DEFAULT[4],))
    (minimum,), minor = step(
        lambda k: (k[5],) if k[:5] == (smoothing, hold, reach, margin, cleanup) else None,
        (DEFAULT[5],))
    chosen = (smoothing, hold, reach, margin, cleanup, minimum)
    settings = dict(zip(NEUTRAL, chosen, strict=True))

    def table(group: dict[tuple, Key]) -> dict[str, dict[str, Any]]:
        return {" ".join(str(v) for v in value): {
            "dice": round(means[key], 4), "slice_recall": round(recall[key], 4),
            **({} if key in allowed else {"ruled_out": "loses slice recall"})}
            for value, key in group.items()}

    report = {
        "n_volumes": len(per_volume),
        "min_gain": config.min_gain,
        "max_recall_loss": config.max_recall_loss,
        "steps": {"smoothing reach margin": table(propagation), "hold": table(presence),
                  "cleanup": table(clean), "min_component": table(minor)},
        "chosen": settings,
        "dice_slices": round(means[DEFAULT], 4),
        "dice_chosen": round(means[chosen], 4),
        "slice_recall_slices": round(recall[DEFAULT], 4),
        "slice_recall_chosen": round(recall[chosen], 4),
        "per_volume": {name: {"slices": round(d[DEFAULT].dice, 4),
                              "chosen": round(d[chosen].dice, 4)}
                       for name, d in per_volume.items()},
    }
    return settings, report


def calibrate_volumes(
    pipeline: Pipeline,
    segmenter: PromptableSegmenter,
    volumes: Iterable[tuple[str, MedicalImage, np.ndarray]],
    prompt: str,
    config: VolumeCalibrationConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict]:
    """The chosen ``volume`` block and its report, from ``(name, volume, (Z, H, W) reference)``
    development volumes (:func:`choose_volume_settings`)."""
    config = config or VolumeCalibrationConfig()
    keys = config.candidates()
    if DEFAULT not in keys:
        raise ValueError("the candidates must include the neutral settings "
                         f"{dict(zip(NEUTRAL, DEFAULT, strict=True))}")
    per_volume = {}
    for name, image, reference in volumes:
        per_volume[name] = volume_scores(pipeline, segmenter, image, reference, prompt, keys)
        if progress is not None:
            progress(name)
    if not per_volume:
        raise ValueError("volume calibration needs at least one volume")
    settings, report = choose_volume_settings(per_volume, config)
    return settings, {"prompt": prompt, **report}
