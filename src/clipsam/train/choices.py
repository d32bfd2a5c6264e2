"""Settings chosen once for every concept, on images that no reported figure is measured on.

A :class:`Setting` is one field of the run configuration (the map -> boxes rule, SaLIP's number
of feature boxes...) with its candidate values; its default is the value the configuration has
today. :func:`choose` runs every candidate through the method users run
(:func:`clipsam.eval.methods.build_method`, scored by the harness of ``clipsam eval``,
:func:`clipsam.eval.harness.evaluate`; with ``ModelConfig.embedding_cache`` every image is
encoded once, before any candidate runs, so that their times compare) on the images of a
``calibration`` or ``train`` subset that show their target, and picks with the chooser of
the per-concept settings (:func:`clipsam.train.calibrate.choose_setting`): the candidate
with the best mean Dice over sets (each set's mean over its images, a failed image counting
0), if it beats the default by the setting's ``min_gain``; else the default. Held-out
(``test``) images are refused.

Subsets (:func:`subset_cases`): ``calibration`` holds the train-part subjects that
:func:`clipsam.io.splits.calibration_of` keeps out of the grounding model's gradient steps
(refused when the text model records one of them among its training subjects); ``train`` the
whole train part of :func:`clipsam.io.splits.split_of`. Layout of ``out`` (one folder per
setting, e.g. ``docs/results/choices/map_box_rule``)::

    <subset>/<candidate>/<set>/per_image.csv, run.json, summary.json   (the harness's files)
    choice.json     every candidate's mean Dice (per set and over sets), the default, the
                    minimum gain, the chosen value, the images used, the model files' SHA-256
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipsam.config import MapBoxRule, ModelConfig, ProposalConfig, RunConfig
from clipsam.errors import InputError
from clipsam.eval.dataset import EvalDataset, open_dataset
from clipsam.eval.harness import evaluate
from clipsam.eval.methods import Method, build_method
from clipsam.eval.seen import count_seen
from clipsam.io.labelled_sets import list_samples
from clipsam.io.masks import read_mask
from clipsam.io.record import to_jsonable, write_record_json
from clipsam.io.splits import calibration_of, split_of
from clipsam.models.embedding_store import StoredEmbeddings, store_images
from clipsam.pipelines.registry import grounding_metadata, load_segmenter
from clipsam.train.calibrate import choose_setting

CHOICE_SUBSETS = ("calibration", "train")
SUBSETS = (*CHOICE_SUBSETS, "test")
CHOICE_FILE = "choice.json"


@dataclass(frozen=True)
class Setting:
    """One configuration field chosen for every concept. ``values``: candidate name -> value;
    ``get`` reads the field from a run configuration, ``put`` returns a configuration with
    another value; ``field`` names it for the record. ``min_gain``: how much better (mean Dice
    over sets) than the default another candidate must be to be chosen."""

    name: str
    method: str
    field: str
    values: Mapping[str, Any]
    get: Callable[[RunConfig], Any]
    put: Callable[[RunConfig, Any], RunConfig]
    min_gain: float = 0.01

    def default(self, base: RunConfig) -> str:
        """The candidate whose value ``base`` has."""
        current = self.get(base)
        for name, value in self.values.items():
            if value == current:
                return name
        raise InputError(f"setting {self.name}: the configuration's value {current!r} is none "
                         f"of the candidates ({', '.join(self.values)})")

    def config(self, base: RunConfig, name: str) -> RunConfig:
        """``base`` with candidate ``name``'s value, run as this setting's method."""
        return self.put(dataclasses.replace(base, method=self.method), self.values[name])


def _proposals(config: RunConfig) -> ProposalConfig:
    """SaLIP's proposal settings: the configured ones, else the segmenter's defaults."""
    from clipsam.models.sam.factory import takes_points
    from clipsam.proposals.generate import defaults_for

    return config.salip.proposals or defaults_for(takes_points(config.models.segmenter))


def _with_proposals(config: RunConfig, **changes: Any) -> RunConfig:
    proposals = dataclasses.replace(_proposals(config), **changes)
    return dataclasses.replace(config, salip=dataclasses.replace(config.salip,
                                                                 proposals=proposals))


def _with_medclipsam(config: RunConfig, **changes: Any) -> RunConfig:
    return dataclasses.replace(config,
                               medclipsam=dataclasses.replace(config.medclipsam, **changes))


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("map_box_rule", "medclipsam", "MedClipSamConfig.box_rule",
            {"every-component": MapBoxRule(), "keep-0.3": MapBoxRule(keep_fraction=0.3),
             "largest-only": MapBoxRule(keep_fraction=1.0),
             "core-0.6": MapBoxRule(peak_fraction=0.6)},
            lambda c: c.medclipsam.box_rule, lambda c, v: _with_medclipsam(c, box_rule=v)),
    Setting("refine", "medclipsam", "MedClipSamConfig.refine", {"off": False, "on": True},
            lambda c: c.medclipsam.refine, lambda c, v: _with_medclipsam(c, refine=v)),
    Setting("mask_prompt", "medclipsam", "MedClipSamConfig.mask_prompt",
            {"off": False, "on": True}, lambda c: c.medclipsam.mask_prompt,
            lambda c, v: _with_medclipsam(c, mask_prompt=v)),
    Setting("salip_max_boxes", "salip", "FeatureBoxConfig.max_boxes",
            {str(n): n for n in (6, 8, 12, 48)},
            lambda c: _proposals(c).feature_boxes.max_boxes,
            lambda c, v: _with_proposals(c, feature_boxes=dataclasses.replace(
                _proposals(c).feature_boxes, max_boxes=v))),
    Setting("salip_box_margins", "salip", "ProposalConfig.box_margins",
            {"as-drawn": (0.0,), "also-grown-0.2": (0.0, 0.2)},
            lambda c: _proposals(c).box_margins,
            lambda c, v: _with_proposals(c, box_margins=v)),
)}
"""Every setting chosen this way: the map -> boxes rule, MedCLIP-SAM's second decode from
the first masks' boxes (``refine``) and from its first masks as dense prompts
(``mask_prompt``); SaLIP's number of feature boxes and whether each is also
decoded grown by 20 % per side."""


def setting_named(name: str) -> Setting:
    try:
        return SETTINGS[name]
    except KeyError:
        raise InputError(f"unknown setting {name!r}; choose one of "
                         f"{', '.join(SETTINGS)}") from None


def check_subset(subset: str) -> None:
    """Refuse a subset that is not one choices are made on (held-out images above all)."""
    if subset == "test":
        raise InputError("subset 'test' holds the held-out images, and choices are never made "
                         "on them: use 'calibration' or 'train'")
    if subset not in CHOICE_SUBSETS:
        raise InputError(f"unknown subset {subset!r}; choose {' or '.join(CHOICE_SUBSETS)}")


def subset_cases(dataset: EvalDataset, subset: str,
                 trained_subjects: Sequence[str] | None = None,
                 limit: int | None = None) -> EvalDataset:
    """The cases of ``dataset`` in ``subset`` whose mask shows the target, in id order; the
    first ``limit`` of them. ``trained_subjects``: the subjects of this set the text model
    took gradient steps on (its metadata), which ``calibration`` must not hold."""
    check_subset(subset)
    samples = {s.image_id: s for s in list_samples(dataset.root)}

    def wanted(case_id: str) -> bool:
        sample = samples.get(case_id)
        if sample is None or split_of(sample) != "train":
            return False
        return subset == "train" or calibration_of(sample)

    cases = [c for c in dataset.cases if wanted(c.id)]
    if subset == "calibration" and trained_subjects:
        trained = set(trained_subjects)
        clash = sorted({samples[c.id].subject for c in cases} & trained)
        if clash:
            raise InputError(f"{dataset.name}: the text model trained on {len(clash)} of these "
                             f"calibration subjects ({', '.join(clash[:3])}...): it was not "
                             "trained with clipsam.io.splits.calibration_of's hold-out; use "
                             "--subset train")
    cases = [c for c in cases if read_mask(c.mask_path).any()]
    return dataclasses.replace(dataset, cases=tuple(cases[:limit]))


def trained_subjects(metadata: Mapping[str, Any] | None, set_name: str) -> list[str] | None:
    """The subjects of ``set_name`` a grounding model's ``metadata`` records it trained on."""
    subjects = (metadata or {}).get("subjects", {}).get(set_name, {})
    return subjects.get("train") if isinstance(subjects, Mapping) else None


def set_dice(summary: Mapping[str, Any]) -> float | None:
    """Mean Dice of one candidate on one set from its harness summary, every image having a
    target: failed images count 0; None when there was no image."""
    n, failed = summary["n"], summary["n_failed"]
    if n + failed == 0:
        return None
    return (summary["dice_mean"] or 0.0) * n / (n + failed)


def _mean(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are not None; None when there is none."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _model_files(method: Method) -> dict[str, str]:
    """``role/file -> SHA-256`` of every model file the method reads."""
    if method.provenance is None:
        return {}
    return {f"{f.role}/{f.label}": f.sha256 for f in method.provenance.identity.files}


def encode_missing(datasets: Iterable[EvalDataset], models: ModelConfig,
                   progress: bool = True) -> None:
    """Put every image of ``datasets`` in the embedding store ``models.embedding_cache``
    (encoding those missing), so that each candidate's time is measured from stored
    embeddings alike."""
    segmenter = load_segmenter(models)
    if isinstance(segmenter, StoredEmbeddings):
        store_images([c.image_path for d in datasets for c in d.cases], segmenter.store,
                     segmenter, progress)


def default_method(config: RunConfig) -> Method:
    """The registered method ``config.method`` as ``clipsam eval`` builds it."""
    return build_method(config.method, config)


def choose(
    setting: Setting,
    data: Path,
    prompts: Mapping[str, str],
    subset: str,
    out: Path,
    models: ModelConfig | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    method_for: Callable[[RunConfig], Method] = default_method,
    command: str | None = None,
) -> dict[str, Any]:
    """Score every candidate of ``setting`` on the ``subset`` images with a target of each set
    ``prompts`` names (``set folder under data -> prompt``; sets missing from ``data`` are
    left out, and recorded), pick one (module notes) and write ``out/choice.json``, returned.
    ``limit``: at most that many images per set (a check, not a choice to keep).
    ``method_for`` builds the method a candidate's configuration runs."""
    check_subset(subset)
    models = models or ModelConfig()
    base = RunConfig(method=setting.method, models=models)
    default = setting.default(base)
    metadata = grounding_metadata(models)
    datasets, missing = {}, []
    for set_name in prompts:
        if not (Path(data) / set_name).is_dir():
            missing.append(set_name)
            continue
        chosen = subset_cases(open_dataset(Path(data) / set_name), subset,
                              trained_subjects(metadata, set_name), limit)
        if chosen.cases:
            datasets[set_name] = chosen
        else:
            missing.append(set_name)
    if not datasets:
        raise InputError(f"no {subset} image with a target in {data} for the sets "
                         f"{', '.join(prompts)}")
    if models.embedding_cache is not None:
        encode_missing(datasets.values(), models, progress)
    seen = {name: (None if metadata is None
                   else count_seen([c.image_path for c in d.cases], metadata))
            for name, d in datasets.items()}
    candidates, files = {}, {}
    for name, value in setting.values.items():
        method = method_for(setting.config(base, name))
        files = files or _model_files(method)
        by_set = {}
        for set_name, dataset in datasets.items():
            summary = evaluate(dataset, method, Path(out) / subset / name / set_name,
                               prompt=prompts[set_name], progress=progress,
                               overwrite=overwrite, subset=subset,
                               seen_by_text_model=seen[set_name])
            by_set[set_name] = {"n": summary["n"] + summary["n_failed"],
                                "n_failed": summary["n_failed"],
                                "dice": set_dice(summary),
                                "seconds_per_image": summary["seconds_per_image"]}
        candidates[name] = {
            "value": to_jsonable(value),
            "settings": method.provenance.key if method.provenance else None,
            "mean_dice": _mean([s["dice"] for s in by_set.values()]),
            "seconds_per_image": _mean([s["seconds_per_image"] for s in by_set.values()]),
            "by_set": by_set}
    chosen = choose_setting({n: c["mean_dice"] for n, c in candidates.items()}, default,
                            setting.min_gain)
    record = {
        "setting": setting.name, "field": setting.field, "method": setting.method,
        "subset": subset, "limit": limit,
        "rule": "the best mean Dice over sets (images with a target; a failed image counts 0) "
                "if it beats the default by min_gain, else the default "
                "(clipsam.train.calibrate.choose_setting)",
        "default": default, "min_gain": setting.min_gain, "chosen": chosen,
        "chosen_value": to_jsonable(setting.values[chosen]),
        "candidates": candidates,
        "images": {name: [c.id for c in d.cases] for name, d in datasets.items()},
        "prompts": {name: prompts[name] for name in datasets},
        "sets_left_out": missing,
        "text_model": models.text_model,
        "model_files": files,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command,
    }
    write_record_json(Path(out) / CHOICE_FILE, record)
    return record
