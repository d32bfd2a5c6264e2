"""Words to concepts measured through the product path on held-out images.

* **Paraphrase Dice** (:func:`paraphrase_dice_rows`, :func:`summarise_paraphrase_dice`): each
  wording of the reported half of the paraphrase list is segmented on the held-out images of
  the set of each concept it may mean, beside that concept's trained wording (its name) on the
  same images. The bar: the wordings' Dice within ``0.02`` of the trained wording's on average,
  and no wording below ``0.9`` of it.
* **Presence confusion** (:func:`presence_rows`, :func:`confusion_table`): "what is in this
  image?" on each set's held-out images; how often each trained concept is reported found on
  each set's images (a sets x concepts table).

Both take a segmenter with :class:`clipsam.api.Segmenter`'s ``segment`` and ``segment_all``
(one encoder pass per image, every prompt from it). Dice is scored on images with the target;
an image that fails is counted, not dropped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clipsam.errors import ClipsamError
from clipsam.eval.dataset import EvalDataset, load_case, open_dataset, subject_subset
from clipsam.eval.metrics import dice
from clipsam.eval.paraphrases import Paraphrase
from clipsam.io.atomic import write_text_atomic
from clipsam.io.read import one_line

MEAN_BAR, RATIO_BAR = 0.02, 0.9


class Segments(Protocol):
    """What the measures call on a :class:`clipsam.api.Segmenter`."""

    def segment(self, image: Any, prompts: Sequence[str]) -> list[Any]: ...

    def segment_all(self, image: Any, found_only: bool = True) -> list[Any]: ...


@dataclass(frozen=True)
class WordCase:
    """A listed wording scored on the images of ``concept``'s set."""

    phrase: str
    kind: str
    concept: str


def held_out(data: Path, set_names: Iterable[str]) -> list[EvalDataset]:
    """The held-out ("test" subjects) part of each named set found under ``data``."""
    return [subject_subset(open_dataset(data / name), "test") for name in set_names
            if (data / name / "images").is_dir()]


def paraphrase_cases(entries: Iterable[Paraphrase], concepts: Iterable[str],
                     half: str = "report") -> list[WordCase]:
    """The wordings of ``half`` that name trained concepts, once for each of ``concepts``
    they may mean (an ambiguous word on every such concept's images)."""
    known = set(concepts)
    return [WordCase(e.phrase, e.kind, c) for e in entries if e.half == half
            for c in e.concepts if c in known]


def paraphrase_dice_rows(segmenter: Segments, dataset: EvalDataset, concept: str,
                         cases: Sequence[WordCase], limit: int | None = None
                         ) -> list[dict[str, Any]]:
    """One row per image and wording of ``cases`` (those of ``concept``): the wording's Dice
    and found, the concept it reached, and the trained wording's Dice and found on the same
    image. A failed image gives one row with its error."""
    phrases = [c for c in cases if c.concept == concept]
    rows: list[dict[str, Any]] = []
    for case in dataset.cases[:limit]:
        base = {"set": dataset.name, "id": case.id, "concept": concept}
        try:
            loaded = load_case(case)
            results = segmenter.segment(loaded.image, [concept, *(p.phrase for p in phrases)])
        except (ClipsamError, OSError, ValueError) as exc:
            rows.append({**base, "error": one_line(exc)})
            continue
        trained = results[0]
        for word, result in zip(phrases, results[1:], strict=True):
            rows.append({
                **base, "phrase": word.phrase, "kind": word.kind,
                "gt_empty": not loaded.mask.any(),
                "reached": result.decisions.get("concept"),
                "similarity": result.decisions.get("concept_similarity"),
                "found": bool(result.found), "dice": dice(result.mask, loaded.mask),
                "trained_found": bool(trained.found),
                "trained_dice": dice(trained.mask, loaded.mask), "error": ""})
    return rows


def summarise_paraphrase_dice(rows: Sequence[dict[str, Any]], mean_bar: float = MEAN_BAR,
                              ratio_bar: float = RATIO_BAR) -> dict[str, Any]:
    """Per wording and concept: mean Dice of the wording and of the trained wording on the
    images with the target, their difference and ratio, which concepts it reached, and how
    often both agree on images without the target; overall: the mean difference, the worst
    ratio, the wordings below ``ratio_bar`` and whether both bars hold."""
    done = [r for r in rows if not r.get("error")]
    pairs = sorted({(r["phrase"], r["concept"]) for r in done})
    per = []
    for phrase, concept in pairs:
        mine = [r for r in done if (r["phrase"], r["concept"]) == (phrase, concept)]
        scored = [r for r in mine if not r["gt_empty"]]
        empty = [r for r in mine if r["gt_empty"]]
        ours = float(np.mean([r["dice"] for r in scored])) if scored else None
        trained = float(np.mean([r["trained_dice"] for r in scored])) if scored else None
        reached: dict[str, int] = {}
        for r in mine:
            reached[str(r["reached"])] = reached.get(str(r["reached"]), 0) + 1
        per.append({
            "phrase": phrase, "concept": concept, "kind": mine[0]["kind"], "n": len(scored),
            "dice": _round(ours), "trained_dice": _round(trained),
            "difference": _round(trained - ours) if scored else None,
            "ratio": _round(ours / trained) if scored and trained else None,
            "reached": reached, "n_empty": len(empty),
            "same_found_on_empty": _round(np.mean([r["found"] == r["trained_found"]
                                                   for r in empty])) if empty else None})
    differences = [p["difference"] for p in per if p["difference"] is not None]
    ratios = [p["ratio"] for p in per if p["ratio"] is not None]
    below = [f"{p['phrase']} ({p['concept']})" for p in per
             if p["ratio"] is not None and p["ratio"] < ratio_bar]
    mean_difference = float(np.mean(differences)) if differences else None
    return {
        "n_wordings": len(per), "n_images": len({(r["set"], r["id"]) for r in rows}),
        "n_failed": len({(r["set"], r["id"]) for r in rows if r.get("error")}),
        "mean_difference": _round(mean_difference),
        "worst_ratio": _round(min(ratios)) if ratios else None,
        "below_ratio_bar": below,
        "bars": {"mean_difference_at_most": mean_bar, "ratio_at_least": ratio_bar,
                 "hold": (mean_difference is not None and mean_difference <= mean_bar
                          and not below)},
        "wordings": per,
    }


def presence_rows(segmenter: Segments, dataset: EvalDataset,
                  limit: int | None = None) -> list[dict[str, Any]]:
    """One row per image and concept of "what is in this image?": found, presence score and
    threshold; whether the image shows its own set's target. A failed image gives one row with
    its error."""
    rows: list[dict[str, Any]] = []
    for case in dataset.cases[:limit]:
        base = {"set": dataset.name, "id": case.id}
        try:
            loaded = load_case(case)
            results = segmenter.segment_all(loaded.image, found_only=False)
        except (ClipsamError, OSError, ValueError) as exc:
            rows.append({**base, "error": one_line(exc)})
            continue
        for result in results:
            rows.append({**base, "gt_empty": not loaded.mask.any(), "concept": result.prompt,
                         "found": bool(result.found),
                         "presence": result.decisions.get("presence"),
                         "threshold": result.decisions.get("threshold"), "error": ""})
    return rows


def confusion_table(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per set: its images scored, failed, and the share of them on which each concept was
    reported found (the sets x concepts table); the same on the images that show the set's
    own target and on those that do not."""
    sets = sorted({r["set"] for r in rows})
    concepts = sorted({r["concept"] for r in rows if not r.get("error")})
    table = {}
    for name in sets:
        mine = [r for r in rows if r["set"] == name]
        done = [r for r in mine if not r.get("error")]

        def rates(subset: list[dict[str, Any]]) -> dict[str, float | None]:
            return {c: _round(np.mean([r["found"] for r in subset if r["concept"] == c]))
                    if any(r["concept"] == c for r in subset) else None for c in concepts}

        table[name] = {
            "n": len({r["id"] for r in done}),
            "n_failed": len({r["id"] for r in mine if r.get("error")}),
            "found_rate": rates(done),
            "found_rate_with_target": rates([r for r in done if not r["gt_empty"]]),
            "found_rate_without_target": rates([r for r in done if r["gt_empty"]]),
        }
    return {"concepts": concepts, "sets": table}


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """``rows`` as CSV (the union of their keys, in first-seen order), written atomically."""
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
