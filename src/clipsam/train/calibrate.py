"""Calibrating a grounding model on subjects never used for its gradient steps.

Four decisions per concept, all recorded in the model with the figures they rest on:

* **presence**: the "not found" thresholds on the presence score, one per operating point
  (:func:`presence_points`): ``recall`` (:func:`place_threshold`, the default) is the highest
  one that keeps ``recall`` of the concept's present targets on the calibration images (stated
  in advance, not a best-accuracy fit), moved half-way (in logits) towards the images without
  the target when nearly all of them score lower; ``balanced`` maximises balanced accuracy
  (:func:`balanced_threshold`); ``precision`` is the lowest threshold answering "not found" on
  at least ``not_found`` of the images without the target (:func:`precision_threshold`). When a
  concept has an image-level presence head (:mod:`clipsam.train.presence_head`), its score
  replaces the map's where it separates the calibration images better (:func:`choose_setting`);
* **mask source**: whether the final mask comes from the segmenter (boxes -> SAM), the map at
  full resolution, or their union: the one with the best mean Dice on the calibration images
  with the target, through the same pipeline users run;
* **map level**, for concepts whose mask comes from the map (or the union): the probability at
  which the map is cut (thin or pointed targets come out wider than they are at 0.5), the best
  of ``map_levels`` by mean Dice on the same images, kept only when it beats 0.5 by
  ``min_level_gain``;
* **box margin**, for concepts whose mask comes from the segmenter (or the union): how much
  each box prompt grows per side before decoding (a box drawn around a coarse map can stop
  inside the target's outline), the best of ``box_margins`` by mean Dice on the same images,
  kept only when it beats no margin by ``min_margin_gain``.

A model holding a decoder adapter (:mod:`clipsam.models.sam.prompt_adapter`) weighs it as a
fifth source afterwards (:func:`calibrate_decoder_source`), on the same images and rule.

Where a decision cannot be calibrated (no calibration image with the target) the model-wide
value is used and a warning is recorded in the model's metadata and returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from clipsam.config import PRESENCE_POINTS, MedClipSamConfig
from clipsam.eval.metrics import dice
from clipsam.eval.presence import group_auc, not_found_rate, recall_at, rounded
from clipsam.io.image import segmenter_input
from clipsam.io.masks import read_mask
from clipsam.io.read import read_image
from clipsam.models.grounding.model import MASK_SOURCES, GroundingModel, PresenceRule
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.pipelines.medclipsam import MedClipSamPipeline
from clipsam.postprocess.coarse_mask import CoarseMaskConfig
from clipsam.train.region_data import RegionData

# the sources one segmenter run scores (the decoder adapter is weighed by
# calibrate_decoder_source, on the model that holds one)
SOURCES = tuple(s for s in MASK_SOURCES if s != "decoder")
K = TypeVar("K")  # a setting's value: a mask source, a map level, a box margin


@dataclass(frozen=True)
class CalibrationConfig:
    """``recall``: share of present targets the presence threshold keeps. ``min_gain``: how
    much better than the segmenter (mean Dice) another mask source must be to be chosen.
    ``negative_quantile``: the share of images without the target that must score below the
    recall point before the threshold moves towards them (:func:`place_threshold`).
    ``map_levels``: the levels compared for map-sourced concepts; another level than the
    default 0.5 must be better by ``min_level_gain``. ``box_margins``: the margins compared for
    concepts decoded by the segmenter; another than 0 must be better by ``min_margin_gain``.
    ``not_found``: the share of images without the target (in each group: the concept's own
    empty images, other sets' images) the ``precision`` operating point answers "not found".
    ``min_statistic_gain``: how much better (AUC, :func:`separation`) a concept's presence
    head must separate the calibration images than the map statistic to replace it."""

    recall: float = 0.95
    negative_quantile: float = 0.9
    not_found: float = 0.9
    min_statistic_gain: float = 0.02
    min_gain: float = 0.02
    map_levels: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    min_level_gain: float = 0.01
    box_margins: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15)
    min_margin_gain: float = 0.01


def presence_scores(model: GroundingModel, data: RegionData,
                    statistic: str = "map") -> np.ndarray:
    """(N, C) presence score of every image for every concept's target name, by the ``map``
    statistic or each concept's presence ``head`` (NaN for a concept without one)."""
    names = [c.target for c in data.concepts]
    if statistic == "head":
        names = [n if n in model.presence_heads else None for n in names]
    scores = np.full((len(data), len(names)), np.nan, np.float32)
    for i in range(len(data)):
        embedding = data.embedding(i)
        scores[i] = [model.presence_score(embedding, name, statistic) if name else np.nan
                     for name in names]
    return scores


def threshold_at_recall(positives: np.ndarray, recall: float) -> float:
    """The highest threshold t with ``mean(positives >= t) >= recall``."""
    ordered = np.sort(np.asarray(positives, np.float64))
    allowed_below = int(np.floor((1.0 - recall) * ordered.size + 1e-9))
    return float(ordered[allowed_below])


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def _midpoint(low: float, high: float) -> float:
    """The point half-way between two scores in logits, in ``(low, high]``."""
    middle = float(1 / (1 + np.exp(-0.5 * (_logit(low) + _logit(high)))))
    return middle if low < middle <= high else high


def place_threshold(positives: np.ndarray, negatives: np.ndarray, recall: float,
                    negative_quantile: float) -> tuple[float, str | None]:
    """The "not found" threshold from presence scores of images with and without the target.

    Start at the recall point (:func:`threshold_at_recall` of ``positives``); when the
    ``negative_quantile`` of ``negatives`` lies below it, move half-way there in logits, so
    present targets a little weaker than the calibration ones are still found. Never above the
    recall point. Returns the threshold and a note when it stays at the recall point.
    """
    point = threshold_at_recall(positives, recall)
    negatives = np.asarray(negatives, np.float64)
    if not negatives.size:
        return point, "no image without the target: threshold at the recall point"
    q = float(np.quantile(negatives, negative_quantile))
    if q >= point:
        return point, (f"images without the target overlap the targets ({negative_quantile:.0%} "
                       f"of them score below {q:.3f}, above the recall point {point:.3f})")
    return _midpoint(q, point), None


def balanced_threshold(positives: np.ndarray, negatives: Sequence[np.ndarray]) -> float:
    """The threshold with the best balanced accuracy: the mean of the recall of ``positives``
    and the "not found" rate of the ``negatives`` groups (:func:`not_found_rate`, each group
    counting equally). The best is reached at a positive's score (raising a threshold to the
    next positive only adds images answered "not found"); the lowest such score, then moved
    half-way (in logits) down to the next lower score of any image, which changes no answer
    here and leaves a margin on both sides."""
    positives = np.asarray(positives, np.float64)
    if not positives.size or not any(len(g) for g in negatives):
        raise ValueError("a balanced threshold needs images with and without the target")
    candidates = np.unique(positives)
    accuracy = [0.5 * (recall_at(positives, t) + not_found_rate(negatives, t))
                for t in candidates]
    best = float(candidates[int(np.argmax(accuracy))])
    every = np.concatenate([positives, *(np.asarray(g, np.float64) for g in negatives)])
    below = every[every < best]
    return _midpoint(float(below.max()), best) if below.size else best


def precision_threshold(negatives: Sequence[np.ndarray], share: float) -> float:
    """The lowest threshold answering "not found" (score below it) on at least ``share`` of
    the images of every non-empty group of ``negatives``: just above the ``ceil(share n)``-th
    lowest score of each group of n, the highest of those."""
    if not 0 < share <= 1:
        raise ValueError(f"the not-found share must lie in (0, 1], got {share}")
    groups = [np.sort(np.asarray(g, np.float64)) for g in negatives if len(g)]
    if not groups:
        raise ValueError("a precision threshold needs images without the target")
    return max(float(np.nextafter(g[int(np.ceil(share * g.size - 1e-9)) - 1], np.inf))
               for g in groups)


def operating_points(recall_threshold: float, positives: np.ndarray,
                     negatives: Sequence[np.ndarray], share: float) -> dict[str, float]:
    """The threshold of every operating point (:data:`clipsam.config.PRESENCE_POINTS`):
    ``recall`` as given, ``balanced`` (:func:`balanced_threshold`) and ``precision``
    (:func:`precision_threshold` at ``share``), each raised to at least the one before it, so
    a point further along never answers "found" where an earlier one says "not found". Without
    images without the target, every point is the recall one."""
    points = {"recall": float(recall_threshold)}
    if not any(len(g) for g in negatives) or not len(positives):
        return dict.fromkeys(PRESENCE_POINTS, float(recall_threshold))
    points["balanced"] = max(balanced_threshold(positives, negatives), points["recall"])
    points["precision"] = max(precision_threshold(negatives, share), points["balanced"])
    return points


def separation(positives: np.ndarray, negatives: Sequence[np.ndarray]) -> float | None:
    """How well a statistic tells images with the target from each group without it: the mean
    AUC over the groups (:func:`clipsam.eval.presence.group_auc`)."""
    return group_auc(positives, negatives)


def point_report(points: dict[str, float], positives: np.ndarray,
                 negatives: Sequence[np.ndarray]) -> dict[str, dict]:
    """Per operating point: its threshold, the recall and each group's "not found" rate."""
    return {point: {"threshold": round(t, 4), "recall": rounded(recall_at(positives, t)),
                    "not_found_empty": rounded(not_found_rate(negatives[:1], t)),
                    "not_found_other_sets": rounded(not_found_rate(negatives[1:], t))}
            for point, t in points.items()}


@dataclass(frozen=True)
class PresenceCalibration:
    """What :func:`calibrate_presence` decided: the model-wide threshold of every operating
    point (``overall``, map statistic), each calibrated concept's (``points``), the statistic
    chosen for each concept with a presence head (``statistics``), the report per concept and
    model-wide, and warnings."""

    overall: dict[str, float]
    points: dict[str, dict[str, float]]
    statistics: dict[str, str]
    report: dict[str, dict]
    overall_report: dict[str, dict]
    warnings: list[str]

    @property
    def thresholds(self) -> dict[str, float]:
        """Each calibrated concept's ``recall`` threshold."""
        return {c: p["recall"] for c, p in self.points.items()}

    def concept_points(self) -> dict[str, dict[str, float]]:
        """Each calibrated concept's other points (how a model stores them)."""
        return {c: {k: v for k, v in p.items() if k != "recall"} for c, p in self.points.items()}


def presence_settings(result: PresenceCalibration, model: GroundingModel) -> dict:
    """The presence keyword arguments of a :class:`GroundingModel` calibrated by ``result``
    (``model``: the one it was calibrated on, for its top-k and presence heads; only the heads
    chosen are kept)."""
    chosen = {c for c, s in result.statistics.items() if s == "head"}
    return {"presence": PresenceRule(model.presence.top_k, result.overall["recall"],
                                     result.overall["balanced"], result.overall["precision"]),
            "concept_thresholds": result.thresholds, "concept_points": result.concept_points(),
            "presence_heads": {c: v for c, v in model.presence_heads.items() if c in chosen},
            "presence_statistics": {c: "head" for c in chosen}}


def calibrate_presence(model: GroundingModel, data: RegionData,
                       config: CalibrationConfig) -> PresenceCalibration:
    """The presence statistic and the "not found" thresholds of every operating point, per
    concept and model-wide, from the calibration images.

    Images with a concept's target: its own labelled ones and those that certainly show it
    (``RegionData.labels``). Images without it, in two groups: the concept's own set's empty
    images, and other sets' images (leaving out sets where it may be visible unlabelled or is
    always shown). For a concept with a presence head, the head replaces the map statistic
    when its :func:`separation` is better by ``config.min_statistic_gain``
    (:func:`choose_setting`). The ``recall`` point is :func:`place_threshold` on all images
    without the target (today's rule); the others are :func:`operating_points`. A concept
    without images with its target takes the model-wide points (a warning). The model-wide
    points are those of the map statistic over every concept's images (``recall``: the
    :func:`threshold_at_recall`, unmoved).
    """
    present, known = data.labels()
    if not present.any():
        raise ValueError("calibration needs at least one image with its target")
    own = np.zeros_like(present)
    own[np.arange(len(data)), data.concept_index] = True
    empty, others = own & ~present & known, ~own & ~present & known
    scores = {"map": presence_scores(model, data)}
    if model.presence_heads:
        scores["head"] = presence_scores(model, data, "head")
    pooled = [scores["map"][empty], scores["map"][others]]
    overall = operating_points(threshold_at_recall(scores["map"][present], config.recall),
                               scores["map"][present], pooled, config.not_found)
    report: dict[str, dict] = {}
    points, statistics, warnings = {}, {}, []
    for c, concept in enumerate(data.concepts):
        name, rows = concept.target, (present[:, c], empty[:, c], others[:, c])
        aucs = {s: separation(v[rows[0], c], [v[rows[1], c], v[rows[2], c]])
                for s, v in scores.items() if not np.isnan(v[:, c]).all()}
        statistic = "map"
        if "head" in aucs:
            if None not in aucs.values():
                statistic = choose_setting(aucs, "map", config.min_statistic_gain)
            else:
                warnings.append(f"{name}: the presence head cannot be compared with the map "
                                "(no calibration image with or without the target): map used")
            statistics[name] = statistic
        positives, *negatives = (scores[statistic][r, c] for r in rows)
        entry = {"statistic": statistic, "auc": {s: rounded(v) for s, v in aucs.items()},
                 "n_present": int(positives.size), "n_empty": int(negatives[0].size),
                 "n_other_sets": int(negatives[1].size)}
        if positives.size:
            recall, entry["note"] = place_threshold(positives, np.concatenate(negatives),
                                                    config.recall, config.negative_quantile)
            entry["recall_point"] = round(threshold_at_recall(positives, config.recall), 4)
            points[name] = operating_points(recall, positives, negatives, config.not_found)
        else:
            warnings.append(f"{name}: no calibration image with the target; model-wide "
                            f"presence thresholds used (recall {overall['recall']:.3f})")
        entry["points"] = point_report(points.get(name, overall), positives, negatives)
        report[name] = {**entry, **entry["points"]["recall"]}  # the default point, as before
    return PresenceCalibration(overall, points, statistics, report,
                               point_report(overall, scores["map"][present], pooled), warnings)



def _cases_with_target(
    data: RegionData, concept: str | None = None
) -> Iterator[tuple[str, np.ndarray, ImageEmbedding, np.ndarray]]:
    """(concept, image, embedding, expert mask) of every calibration image that shows its
    concept's target (only ``concept``'s images when given), read one at a time."""
    for i in np.flatnonzero(data.has_target()):
        target = data.concepts[int(data.concept_index[i])].target
        if concept is None or target == concept:
            sample = data.samples[i]
            yield (target, segmenter_input(read_image(sample.image_path)), data.embedding(i),
                   read_mask(sample.mask_path))


def source_dice(pipeline: MedClipSamPipeline, image: np.ndarray, prompt: str,
                embedding: ImageEmbedding, reference: np.ndarray) -> dict[str, float]:
    """Dice of each mask source on one labelled image: one run of ``pipeline`` (which must
    decode with the segmenter) gives the segmenter's mask and the map's targets."""
    result = pipeline.run(image, prompt, embedding=embedding, keep_intermediates=True)
    mapped = result.intermediates.get("map_mask", np.zeros_like(result.mask))
    masks = (result.mask, mapped, result.mask | mapped)
    return {s: dice(m, reference) for s, m in zip(SOURCES, masks, strict=True)}


def choose_setting(means: dict[K, float], default: K, min_gain: float) -> K:
    """The key of ``means`` (a setting's mean Dice per value) with the best mean, if it beats
    ``default`` by ``min_gain``; else ``default``. Ties go to the earlier key."""
    best = max(means, key=means.__getitem__)
    return best if means[best] >= means[default] + min_gain else default


def choose_source(means: dict[str, float], min_gain: float) -> str:
    """The source with the best mean Dice, if it beats the segmenter by ``min_gain``; else the
    segmenter."""
    return choose_setting({s: means[s] for s in SOURCES}, "segmenter", min_gain)


def calibrate_mask_sources(
    model: GroundingModel,
    segmenter: PromptableSegmenter,
    data: RegionData,
    config: CalibrationConfig,
    pipeline_config: MedClipSamConfig | None = None,
) -> tuple[dict[str, str], dict[str, dict], list[str]]:
    """Per concept: the chosen mask source, the mean Dice of each source, and warnings.

    Runs the MedCLIP-SAM pipeline (built-in saliency, presence included) on every calibration
    image with a target, from its cached embedding, once per image; the segmenter's mask, the
    map's targets and their union are scored against the expert mask.
    """
    pipeline = MedClipSamPipeline(segmenter, model, replace(pipeline_config or MedClipSamConfig(),
                                                            mask_source="segmenter"))
    scores: dict[str, dict[str, list[float]]] = {c.target: {s: [] for s in SOURCES}
                                                 for c in data.concepts}
    for concept, image, embedding, reference in _cases_with_target(data):
        measured = source_dice(pipeline, image, concept, embedding, reference)
        for source, value in measured.items():
            scores[concept][source].append(value)
    chosen, report, warnings = {}, {}, []
    for concept, per_source in scores.items():
        if not per_source["segmenter"]:
            warnings.append(f"{concept}: no calibration image with the target; mask source "
                            "'segmenter' used")
            continue
        means = {s: float(np.mean(v)) for s, v in per_source.items()}
        best = choose_source(means, config.min_gain)
        chosen[concept] = best
        report[concept] = {"n": len(per_source["segmenter"]), "chosen": best,
                           **{f"dice_{s}": round(m, 4) for s, m in means.items()}}
    return chosen, report, warnings


def _best_setting(
    cases: Sequence[tuple[np.ndarray, ImageEmbedding, np.ndarray]],
    concept: str,
    pipeline_for: Callable[[float], MedClipSamPipeline],
    values: Sequence[float],
    default: float,
    min_gain: float,
) -> tuple[float, dict[float, float]]:
    """The value of one pipeline setting with the best mean Dice on ``cases`` (image, embedding,
    expert mask), kept only when it beats ``default`` by ``min_gain``; and every value's mean."""
    means = {}
    for value in sorted({*values, default}):
        pipeline = pipeline_for(value)
        means[value] = float(np.mean([dice(pipeline.run(image, concept, embedding=embedding).mask,
                                           reference)
                                      for image, embedding, reference in cases]))
    return choose_setting(means, default, min_gain), means


def calibrate_map_levels(
    model: GroundingModel,
    segmenter: PromptableSegmenter,
    data: RegionData,
    sources: dict[str, str],
    config: CalibrationConfig,
    pipeline_config: MedClipSamConfig | None = None,
) -> tuple[dict[str, float], dict[str, dict]]:
    """Per concept answered from the map or the union (``sources``): the chosen map level and
    the mean Dice at every level of ``config.map_levels`` (presence included, as users run)."""
    default = CoarseMaskConfig.level
    base = pipeline_config or MedClipSamConfig()
    levels, report = {}, {}
    for concept, source in sorted(sources.items()):
        if source == "segmenter":
            continue
        cases = [case[1:] for case in _cases_with_target(data, concept)]
        chosen, means = _best_setting(
            cases, concept, lambda level, source=source: MedClipSamPipeline(
                segmenter, model, replace(base, mask_source=source, map_level=level)),
            config.map_levels, default, config.min_level_gain)
        if chosen != default:
            levels[concept] = chosen
        report[concept] = {"n": len(cases), "chosen": chosen,
                           "dice_by_level": {str(k): round(v, 4) for k, v in means.items()}}
    return levels, report


def calibrate_box_margins(
    model: GroundingModel,
    segmenter: PromptableSegmenter,
    data: RegionData,
    sources: dict[str, str],
    levels: dict[str, float],
    config: CalibrationConfig,
    pipeline_config: MedClipSamConfig | None = None,
) -> tuple[dict[str, float], dict[str, dict]]:
    """Per concept decoded by the segmenter (``sources``: ``segmenter`` or ``union``, a concept
    missing from it counts as ``segmenter``; ``levels``: the calibrated map levels): the chosen
    box margin and the mean Dice at every margin of ``config.box_margins`` (presence
    included)."""
    base = pipeline_config or MedClipSamConfig()
    margins, report = {}, {}
    for concept in sorted(c.target for c in data.concepts):
        source = sources.get(concept, "segmenter")
        if source == "map":
            continue
        cases = [case[1:] for case in _cases_with_target(data, concept)]
        if not cases:
            continue
        chosen, means = _best_setting(
            cases, concept, lambda margin, source=source, concept=concept: MedClipSamPipeline(
                segmenter, model, replace(base, mask_source=source, box_margin=margin,
                                          map_level=levels.get(concept))),
            config.box_margins, 0.0, config.min_margin_gain)
        if chosen:
            margins[concept] = chosen
        report[concept] = {"n": len(cases), "chosen": chosen,
                           "dice_by_margin": {str(k): round(v, 4) for k, v in means.items()}}
    return margins, report


def concept_phrases(concepts: Sequence) -> dict[str, list[str]]:
    """Every phrase that names each concept (its target phrases), for prompt matching."""
    return {c.target: sorted({c.target, *c.phrases}) for c in concepts}


def calibrate_decoder_source(
    model: GroundingModel,
    segmenter: PromptableSegmenter,
    data: RegionData,
    config: CalibrationConfig,
    pipeline_config: MedClipSamConfig | None = None,
) -> tuple[dict[str, str], dict[str, dict]]:
    """Per concept: its mask source after weighing the decoder adapter (``model`` must hold
    one) against the source it has, and the mean Dice of both on the calibration images with
    the target, through the pipeline users run (presence included). ``decoder`` replaces the
    concept's source when it is better by ``config.min_gain``; a concept without calibration
    images keeps its source."""
    base = pipeline_config or MedClipSamConfig()
    sources = dict(model.mask_sources)
    report = {}
    for concept in sorted(c.target for c in data.concepts):
        current = model.mask_source_for(concept)
        cases = [case[1:] for case in _cases_with_target(data, concept)]
        if not cases:
            continue
        means = {}
        for source in (current, "decoder"):
            pipeline = MedClipSamPipeline(segmenter, model, replace(base, mask_source=source))
            means[source] = float(np.mean([
                dice(pipeline.run(image, concept, embedding=embedding).mask, reference)
                for image, embedding, reference in cases]))
        chosen = choose_setting(means, current, config.min_gain)
        sources[concept] = chosen
        report[concept] = {"n": len(cases), "before": current, "chosen": chosen,
                           **{f"dice_{s}": round(m, 4) for s, m in means.items()}}
    return sources, report
