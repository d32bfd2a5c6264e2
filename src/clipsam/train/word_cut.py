"""Choosing the word rule (similarity cut and ambiguity margin) on a written paraphrase list.

The list (``clipsam/data/paraphrases.json``, written before any tuning) gives users' wordings of
the trained targets with the concepts they may mean: one concept (a plural, an article, a
spelling variant, a synonym), several (ambiguous words, which the image decides) or none
(targets that were never trained). It is split in two halves by a hash of each phrase
(:func:`clipsam.eval.paraphrases.half_of`): the ``choose`` half picks the rule, the ``report``
half is only scored.

A decision (:func:`clipsam.models.grounding.words.decide`, with the concepts a generic word
names) is correct when an untrained target reaches no concept, a one-concept wording reaches
exactly its concept without ambiguity, and an ambiguous word is ambiguous between candidates
that include every concept it may mean: the image can reject a candidate that it does not show
but cannot choose one that is missing. The rule with
the most correct decisions on the ``choose`` half wins; among equals the smallest margin, then
the middle of the tied cuts (a cut with room on both sides).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from clipsam.errors import InputError
from clipsam.eval.paraphrases import HALVES, Paraphrase
from clipsam.models.grounding.model import GroundingModel
from clipsam.models.grounding.words import WordRule, decide

CUTS = tuple(round(float(c), 2) for c in np.arange(0.30, 0.951, 0.01))
MARGINS = tuple(round(float(m), 2) for m in np.arange(0.0, 0.201, 0.01))


def check_list(model: GroundingModel, entries: Sequence[Paraphrase]) -> None:
    """Refuse a list that names a concept the model lacks or holds one of its trained phrases
    (those reach their concept by definition and would score the rule for free)."""
    names = set(model.concept_names)
    trained = names | {p for phrases in model.concept_phrases.values() for p in phrases}
    unknown = sorted({c for e in entries for c in e.concepts} - names)
    if unknown:
        raise InputError(f"the paraphrase list names concepts the model does not have: {unknown}")
    listed = sorted(e.phrase for e in entries if e.phrase in trained)
    if listed:
        raise InputError(f"the paraphrase list holds trained phrases: {listed}")


def is_correct(entry: Paraphrase, concept: str | None, candidates: Sequence[str]) -> bool:
    """Whether a decision (reached concept, candidates when ambiguous) is right for the entry."""
    if not entry.concepts:
        return concept is None
    if len(entry.concepts) == 1:
        return concept == entry.concepts[0] and not candidates
    return len(candidates) > 1 and set(entry.concepts) <= set(candidates)


@dataclass(frozen=True)
class Words:
    """What the model makes of one entry's words: every concept's (similarity, nearest
    phrase) through its encoder, and the concepts the entry names as a generic word."""

    nearest: dict[str, tuple[float, str]]
    members: tuple[str, ...] = ()

    def decide(self, rule: WordRule) -> tuple[str | None, list[str]]:
        return decide({c: s for c, (s, _) in self.nearest.items()}, rule, self.members)


def similarity_table(model: GroundingModel, entries: Sequence[Paraphrase]) -> list[Words]:
    """Per entry, its :class:`Words` under the model."""
    return [Words(model.concept_similarities(e.phrase), tuple(model.generic_members(e.phrase)))
            for e in entries]


def score(entries: Sequence[Paraphrase], table: Sequence[Words],
          rule: WordRule) -> dict[str, Any]:
    """Correct decisions under ``rule``: the share overall and per kind, and their counts."""
    right: dict[str, list[bool]] = {}
    for entry, words in zip(entries, table, strict=True):
        concept, candidates = words.decide(rule)
        right.setdefault(entry.kind, []).append(is_correct(entry, concept, candidates))
    every = [v for values in right.values() for v in values]
    return {"accuracy": _share(every), "n": len(every), "correct": int(sum(every)),
            "by_kind": {k: {"accuracy": _share(v), "n": len(v)} for k, v in sorted(right.items())}}


def choose_rule(entries: Sequence[Paraphrase], table: Sequence[Words],
                cuts: Sequence[float] = CUTS,
                margins: Sequence[float] = MARGINS) -> tuple[WordRule, np.ndarray]:
    """The rule with the most correct decisions (ties: smallest margin, then the middle of the
    tied cuts) and the (margins, cuts) grid of correct counts."""
    grid = np.array([[score(entries, table, WordRule(c, m))["correct"] for c in cuts]
                     for m in margins])
    best = grid.max()
    row = int(np.flatnonzero((grid == best).any(axis=1))[0])
    tied = np.flatnonzero(grid[row] == best)
    return WordRule(float(cuts[int(tied[len(tied) // 2])]), float(margins[row])), grid


def decisions(entries: Sequence[Paraphrase], table: Sequence[Words],
              rule: WordRule) -> list[dict[str, Any]]:
    """Each entry's decision under ``rule``: reached concept, candidates (and whether they are
    a generic word's), nearest concept and its similarity, and whether it is right."""
    rows = []
    for entry, words in zip(entries, table, strict=True):
        similarities = {c: s for c, (s, _) in words.nearest.items()}
        concept, candidates = words.decide(rule)
        top = min(similarities, key=lambda c: (-similarities[c], c))
        rows.append({"phrase": entry.phrase, "kind": entry.kind, "half": entry.half,
                     "expected": list(entry.concepts), "reached": concept,
                     "candidates": candidates, "generic_word": bool(words.members),
                     "nearest": top, "nearest_phrase": words.nearest[top][1],
                     "similarity": round(similarities[top], 4),
                     "correct": is_correct(entry, concept, candidates)})
    return rows


def word_cut_report(model: GroundingModel, entries: Sequence[Paraphrase],
                    cuts: Sequence[float] = CUTS,
                    margins: Sequence[float] = MARGINS) -> dict[str, Any]:
    """Choose the rule on the ``choose`` half and score it on both halves: the result file's
    content (rule, each half's accuracy, every decision, the grid of the choosing half)."""
    check_list(model, entries)
    table = similarity_table(model, entries)
    halves = {h: [i for i, e in enumerate(entries) if e.half == h] for h in HALVES}
    if not all(halves.values()):
        raise InputError("the paraphrase list needs entries in both halves")

    def part(h: str) -> tuple[list[Paraphrase], list[Words]]:
        return [entries[i] for i in halves[h]], [table[i] for i in halves[h]]

    rule, grid = choose_rule(*part("choose"), cuts, margins)
    return {
        "rule": asdict(rule),
        "choose": score(*part("choose"), rule),
        "report": score(*part("report"), rule),
        "grid": {"cuts": list(cuts), "margins": list(margins),
                 "correct_on_choose": grid.tolist()},
        "decisions": decisions(entries, table, rule),
    }


def _share(values: Sequence[bool]) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None
