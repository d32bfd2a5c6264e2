"""From labelled samples to a saved, calibrated grounding model folder.

Each image is read once to find (or make) its embedding in the embedding store
(:mod:`clipsam.models.embedding_store`); training then memory-maps the stored features.
Subjects are split by a hash (:func:`clipsam.io.splits.calibration_of`): most train the heads
(and, when the recipe asks, the image-level presence heads, :mod:`clipsam.train.presence_head`),
the rest (never used for gradient steps) give the validation curve and calibrate presence
(the statistic and every operating point) and mask sources. The model's metadata records the
training and calibration subjects per set, the SHA-256 of their image files
(:mod:`clipsam.eval.seen`, so that evaluation can tell which images a model has seen under any
name), the recipe, the curve and the calibration figures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from clipsam.errors import InputError
from clipsam.eval.seen import SEEN_KEY, image_digests
from clipsam.io.atomic import write_text_atomic
from clipsam.io.splits import calibration_of
from clipsam.models.embedding_store import EmbeddingStore, store_images
from clipsam.models.grounding.heads import GroundingHeads, HeadsConfig
from clipsam.models.grounding.model import HEADS_FILE, GroundingModel, PresenceRule, load_heads
from clipsam.models.grounding.text_encoder import SentenceEncoder
from clipsam.models.segmenter import PromptableSegmenter
from clipsam.models.weights import sha256_of
from clipsam.train.calibrate import (
    calibrate_box_margins,
    calibrate_map_levels,
    calibrate_mask_sources,
    calibrate_presence,
    concept_phrases,
    presence_settings,
)
from clipsam.train.captions import Concept
from clipsam.train.negative_bank import BANK_FILE, build_bank
from clipsam.train.presence_head import fit_presence_heads
from clipsam.train.recipes import Recipe
from clipsam.train.region_data import build_region_data
from clipsam.train.trainer import train_heads
from clipsam.train.views import make_views

VIEWS_DIR = "views"


def subjects_by_set(samples: Sequence) -> dict[str, list[str]]:
    """Sorted distinct subjects of each set."""
    out: dict[str, set[str]] = {}
    for s in samples:
        out.setdefault(s.set_name, set()).add(s.subject)
    return {k: sorted(v) for k, v in sorted(out.items())}


def _training_views(samples: Sequence, store: EmbeddingStore, recipe: Recipe,
                    segmenter: PromptableSegmenter | None, captions: Sequence[str] | None,
                    progress: bool) -> tuple[list, list[str]]:
    """The recipe's augmented views of the training samples, written under
    ``<store folder>/views``, and their keys in ``store`` (encoded when missing); none when the
    recipe has no views."""
    if not recipe.views:
        return [], []
    if captions is not None or segmenter is None:
        raise InputError(f"recipe {recipe.name!r} adds re-encoded views: it needs segmentation "
                         "sets and the segmenter")
    views = [view for config in recipe.views
             for view in make_views(samples, store.folder / VIEWS_DIR, config)]
    return views, store_images([v.image_path for v in views], store, segmenter, progress)


def initial_heads(recipe: Recipe, init: Path | None) -> tuple[GroundingHeads | None, dict | None]:
    """The heads ``recipe`` starts from, loaded from the model folder ``init``, and the record
    of them (folder, recipe, SHA-256 of its heads file); none for a recipe without ``init``.
    A missing folder, a model of another recipe or other heads settings is an InputError."""
    if recipe.init is None:
        if init is not None:
            raise InputError(f"recipe {recipe.name!r} trains from random weights: --init is "
                             "not used by it")
        return None, None
    if init is None:
        raise InputError(f"recipe {recipe.name!r} starts from a {recipe.init!r} model: give "
                         "its folder with --init MODEL_DIR")
    path = Path(init) / "config.json"
    if not path.is_file():
        raise InputError(f"--init {init}: not a grounding model folder (no config.json)")
    config = json.loads(path.read_text())
    made_by = config.get("metadata", {}).get("recipe")
    if made_by != recipe.init:
        raise InputError(f"--init {init}: made by recipe {made_by!r}, recipe {recipe.name!r} "
                         f"starts from a {recipe.init!r} model")
    if HeadsConfig.from_dict(config["heads"]) != recipe.heads:
        raise InputError(f"--init {init}: its heads settings differ from recipe "
                         f"{recipe.name!r}'s")
    heads_file = Path(init) / HEADS_FILE
    record = {"model": str(init), "recipe": made_by,
              "heads_sha256": sha256_of(heads_file)}
    return load_heads(Path(init), config["heads"]), record


def recipe_concepts(concepts: dict[str, Concept], recipe: Recipe) -> dict[str, Concept]:
    """The concepts as ``recipe`` trains them: without ``covisible``, the targets a set's
    images always show are left out there (``may_show``) instead of trained as present."""
    if recipe.covisible:
        return concepts
    return {name: replace(c, may_show=c.may_show + c.always_shows, always_shows=())
            for name, c in concepts.items()}


def fit_from_samples(
    samples: Sequence,
    store: EmbeddingStore,
    concepts: dict[str, Concept],
    recipe: Recipe,
    out_dir: Path | None,
    segmenter: PromptableSegmenter | None = None,
    captions: Sequence[str] | None = None,
    encoder: SentenceEncoder | None = None,
    metadata: dict | None = None,
    progress: bool = True,
    init: Path | None = None,
) -> GroundingModel:
    """Train on most subjects, validate and calibrate on the rest, save to ``out_dir``.

    Every image's embedding is taken from ``store``; those missing are encoded by ``segmenter``
    (without one, a missing embedding is an InputError). Mask sources are calibrated only with
    a ``segmenter`` (and not for caption tables, which have no masks). Every calibration step
    that cannot be done is a recorded warning. ``init``: the model folder a recipe with an
    ``init`` recipe starts from (:func:`initial_heads`).
    """
    initial, init_record = initial_heads(recipe, init)
    warnings: list[str] = []
    concepts = recipe_concepts(concepts, recipe)
    held = [calibration_of(s, recipe.calibration_fraction) for s in samples]
    if all(held) or not any(held):
        warnings.append(f"no calibration subjects among {len(samples)} images: the presence "
                        "threshold is the untrained default 0.5 and mask sources are not chosen")
        held = [False] * len(samples)
    pick = [i for i, h in enumerate(held) if not h]
    cal = [i for i, h in enumerate(held) if h]
    keys = store_images([s.image_path for s in samples], store, segmenter, progress)
    views, view_keys = _training_views([samples[i] for i in pick], store, recipe, segmenter,
                                       captions, progress)
    train = build_region_data([samples[i] for i in pick] + views,
                              [keys[i] for i in pick] + view_keys, store, concepts,
                              [captions[i] for i in pick] if captions is not None else None)
    calibration = (build_region_data([samples[i] for i in cal], [keys[i] for i in cal], store,
                                     concepts,
                                     [captions[i] for i in cal] if captions is not None else None)
                   if cal else None)
    if calibration is not None and calibration.concepts != train.concepts:
        warnings.append("the calibration captions name other concepts than the training ones: "
                        "no calibration")
        calibration = None
    encoder = encoder or SentenceEncoder()
    heads, curve = train_heads(train, recipe.train, out_dir, encoder, recipe.heads, progress,
                               validation=calibration, initial=initial)
    calibration_info: dict = {"images": len(calibration) if calibration is not None else 0}
    presence: dict = {"presence": PresenceRule(top_k=recipe.train.top_k)}
    if recipe.presence_head is not None and calibration is not None:
        presence["presence_heads"], calibration_info["presence_head"] = fit_presence_heads(
            GroundingModel(heads, **presence, text_encoder=encoder), train,
            recipe.presence_head)
    model = GroundingModel(heads, **presence, text_encoder=encoder,
                           concept_phrases=concept_phrases(train.concepts))
    sources: dict[str, str] = {}
    levels: dict[str, float] = {}
    margins: dict[str, float] = {}
    if calibration is not None and calibration.has_target().any():
        result = calibrate_presence(model, calibration, recipe.calibrate)
        calibration_info["presence"] = result.report
        calibration_info["presence_model_wide"] = result.overall_report
        warnings += result.warnings
        presence = presence_settings(result, model)
        model = GroundingModel(heads, **presence, text_encoder=encoder,
                               concept_phrases=concept_phrases(train.concepts))
        if segmenter is not None and captions is None:
            sources, calibration_info["mask_source"], more = calibrate_mask_sources(
                model, segmenter, calibration, recipe.calibrate)
            warnings += more
            levels, calibration_info["map_level"] = calibrate_map_levels(
                model, segmenter, calibration, sources, recipe.calibrate)
            margins, calibration_info["box_margin"] = calibrate_box_margins(
                model, segmenter, calibration, sources, levels, recipe.calibrate)
        elif captions is None:
            warnings.append("no segmenter given: mask sources not calibrated (segmenter used)")
    elif calibration is not None:
        warnings.append("no calibration image has a target: presence threshold 0.5 (default)")
    info = {
        "recipe": recipe.name, "training": asdict(recipe.train), "init": init_record,
        "concepts": [c.target for c in train.concepts],
        "train_images": len(pick), "views": len(views),
        "calibration_images": calibration_info["images"],
        "subjects": {name: {"train": subs} for name, subs in
                     subjects_by_set([samples[i] for i in pick]).items()},
        SEEN_KEY: image_digests((samples[i].set_name, samples[i].image_path)
                                for i in pick + cal),
        "curve": curve, "calibration": calibration_info, "warnings": warnings,
        **(metadata or {}),
    }
    for name, subs in subjects_by_set([samples[i] for i in cal]).items():
        info["subjects"].setdefault(name, {"train": []})["calibration"] = subs
    for warning in warnings:
        print(f"warning: {warning}", flush=True)
    model = GroundingModel(heads, **presence, text_encoder=encoder, metadata=info,
                           concept_phrases=concept_phrases(train.concepts), mask_sources=sources,
                           map_levels=levels, box_margins=margins)
    if out_dir is not None:
        model.save(Path(out_dir))
        build_bank(model, train).save(Path(out_dir) / BANK_FILE)
        write_text_atomic(Path(out_dir) / "training.json", json.dumps(info, indent=1) + "\n")
    return model
