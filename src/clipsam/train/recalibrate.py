"""Recalibrating an existing grounding model's presence without retraining its heads.

A model records the subjects it was trained and calibrated on, per set, and its recipe. From
those and the data folder, :func:`recalibrate_presence` rebuilds the calibration images (and,
to fit image-level presence heads, the training images; re-encoded views are not rebuilt),
takes their embeddings from the embedding store, and calibrates presence again by the same
library code as training (:func:`clipsam.train.calibrate.calibrate_presence`): every operating
point, and the statistic of each concept when presence heads are fitted. The heads, mask
sources, map levels and box margins are kept; adapted concepts keep their own thresholds. The
images found must be the ones the model records (by content, :mod:`clipsam.eval.seen`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from clipsam.errors import InputError
from clipsam.eval.seen import SEEN_KEY, count_seen
from clipsam.io.atomic import write_text_atomic
from clipsam.io.labelled_sets import Sample, list_samples
from clipsam.models.embedding_store import EmbeddingStore, store_images
from clipsam.models.grounding.model import CONFIG_FILE, HEADS_FILE, GroundingModel
from clipsam.models.segmenter import PromptableSegmenter
from clipsam.train.calibrate import CalibrationConfig, calibrate_presence, presence_settings
from clipsam.train.captions import Concept, builtin_concepts
from clipsam.train.fit import recipe_concepts
from clipsam.train.presence_head import PresenceHeadConfig, fit_presence_heads
from clipsam.train.recipes import Recipe, recipe_named
from clipsam.train.region_data import RegionData, build_region_data

TRAINING_FILE = "training.json"


@dataclass(frozen=True)
class Recalibration:
    """The recalibrated model and, per trained concept, its recall threshold before and after,
    the statistic chosen and every operating point's threshold."""

    model: GroundingModel
    changes: dict[str, dict]


def model_concepts(metadata: dict, recipe: Recipe) -> dict[str, Concept]:
    """Set name -> concept, as the model was trained: the built-in entry of a set whose target
    the model records under that name, else a concept of the recorded target alone; the
    ``recipe``'s treatment of always-shown targets applied (:func:`recipe_concepts`)."""
    sets, targets = sorted(metadata.get("subjects", {})), metadata.get("concepts", [])
    if not sets or len(sets) != len(targets):
        raise InputError("the model does not record its sets and concepts (subjects, concepts): "
                         "it cannot be recalibrated")
    known = builtin_concepts()
    concepts = {name: known[name] if name in known and known[name].target == target
                else Concept(target=target, phrases=(target,))
                for name, target in zip(sets, targets, strict=True)}
    return recipe_concepts(concepts, recipe)


def recorded_samples(metadata: dict, data_root: Path, part: str) -> list[Sample]:
    """The images of the subjects the model records under ``part`` ("train" or "calibration")
    in each set's folder under ``data_root``."""
    samples = []
    for name, parts in sorted(metadata["subjects"].items()):
        wanted = set(parts.get(part, []))
        if not wanted:
            continue
        folder = Path(data_root) / name
        if not (folder / "images").is_dir():
            raise InputError(f"{folder} is not a labelled set folder (the model's set {name!r})")
        samples += [s for s in list_samples(folder) if s.subject in wanted]
    return samples


def _region_data(samples: list[Sample], store: EmbeddingStore, concepts: dict[str, Concept],
                 segmenter: PromptableSegmenter | None, progress: bool) -> RegionData:
    keys = store_images([s.image_path for s in samples], store, segmenter, progress)
    return build_region_data(samples, keys, store, concepts)


def check_calibration_images(metadata: dict, samples: list[Sample]) -> None:
    """Refuse a data folder whose calibration images are not those the model records (their
    number, and their content where the model records digests)."""
    expected = metadata.get("calibration", {}).get("images", metadata.get("calibration_images"))
    if expected is not None and len(samples) != expected:
        raise InputError(f"found {len(samples)} images of the model's calibration subjects; it "
                         f"was calibrated on {expected}: not the data it was trained with")
    if SEEN_KEY in metadata:
        seen = count_seen([s.image_path for s in samples], metadata)
        if seen != len(samples):
            raise InputError(f"{len(samples) - seen} of the {len(samples)} calibration images "
                             "differ from those the model was calibrated on (by content)")


def recalibrate_presence(
    model: GroundingModel,
    data_root: Path,
    store: EmbeddingStore,
    segmenter: PromptableSegmenter | None = None,
    config: CalibrationConfig | None = None,
    presence_head: PresenceHeadConfig | None = None,
    recipe: Recipe | None = None,
    progress: bool = True,
) -> Recalibration:
    """``model`` with its presence calibrated again on its recorded calibration subjects under
    ``data_root`` (every operating point; with ``presence_head``, image-level heads fitted on
    its training subjects and chosen per concept). Embeddings come from ``store``; missing ones
    are encoded by ``segmenter`` (without one they are an InputError). ``recipe``: the one the
    model records by default; ``config``: its calibration settings by default. The metadata
    records what was done."""
    metadata = model.metadata
    recipe = recipe or recipe_named(str(metadata.get("recipe")))
    concepts = model_concepts(metadata, recipe)
    config = config or recipe.calibrate
    samples = recorded_samples(metadata, data_root, "calibration")
    check_calibration_images(metadata, samples)
    calibration = _region_data(samples, store, concepts, segmenter, progress)
    base = GroundingModel(model.heads, model.presence, text_encoder=model.text_encoder)
    info = dict(metadata.get("calibration", {}))
    if presence_head is not None:
        train = _region_data(recorded_samples(metadata, data_root, "train"), store, concepts,
                             segmenter, progress)
        heads, info["presence_head"] = fit_presence_heads(base, train, presence_head)
        base = GroundingModel(model.heads, model.presence, text_encoder=model.text_encoder,
                              presence_heads=heads)
    else:
        info.pop("presence_head", None)
    result = calibrate_presence(base, calibration, config)
    info["presence"], info["presence_model_wide"] = result.report, result.overall_report
    settings = presence_settings(result, base)
    adapted = set(metadata.get("adapted", {}))
    settings["concept_thresholds"] = {
        **{k: v for k, v in model.concept_thresholds.items() if k in adapted},
        **settings["concept_thresholds"]}
    record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "images": len(calibration), "data": str(data_root),
              "calibrate": asdict(config),
              "presence_head": asdict(presence_head) if presence_head is not None else None,
              "warnings": result.warnings}
    new_metadata = {**metadata, "calibration": info,
                    "recalibrated": [*metadata.get("recalibrated", []), record]}
    recalibrated = GroundingModel(
        model.heads, settings["presence"], model.concepts, settings["concept_thresholds"],
        model.text_encoder, model._segmenter, new_metadata, model.concept_phrases,
        model.mask_sources, concept_probes=model.concept_probes, map_levels=model.map_levels,
        box_margins=model.box_margins, volume=model.volume, word_rule=model.word_rule,
        concept_points=settings["concept_points"], presence_heads=settings["presence_heads"],
        presence_statistics=settings["presence_statistics"])
    changes = {c.target: {"recall_before": model.concept_thresholds.get(c.target),
                          "statistic": recalibrated.statistic_of(c.target),
                          **result.points.get(c.target, {})}
               for c in concepts.values()}
    return Recalibration(recalibrated, changes)


def save_recalibrated(model: GroundingModel, source: Path, out_dir: Path) -> Path:
    """Write ``model`` into ``out_dir`` with the other files of its ``source`` folder (negative
    bank, model card...) copied; ``training.json``, where there is one, gets the new
    metadata."""
    source, out_dir = Path(source), Path(out_dir)
    if out_dir.resolve() == source.resolve():
        raise InputError("write the recalibrated model to another folder than its source")
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name not in (CONFIG_FILE, HEADS_FILE, TRAINING_FILE):
            shutil.copy2(path, out_dir / path.name)
    model.save(out_dir)
    if (source / TRAINING_FILE).is_file():
        write_text_atomic(out_dir / TRAINING_FILE, json.dumps(model.metadata, indent=1) + "\n")
    return out_dir
