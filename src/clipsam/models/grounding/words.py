"""Words to concepts: which trained or adapted concept a prompt names, by meaning.

A prompt is compared with every phrase of every concept (a concept's name counts as one of its
phrases) through the sentence encoder; a concept's similarity is that of its nearest phrase
(cosine of the unit sentence vectors). The prompt reaches the most similar concept when that
similarity is at least the rule's ``cut``; the concepts within ``margin`` of the best (and above
the cut) are the candidates of an ambiguous prompt ("tumour" fits breast and brain tumour),
which the image decides between (:meth:`GroundingModel.reach`). A prompt that is a concept's
name or one of its phrases reaches that concept with similarity 1 and is never ambiguous. A
prompt that is a generic word ("tumours", "a lesion": ``clipsam/data/generic_words.json``) has
as candidates every concept whose target is of the word's SNOMED category, whatever their
similarity: the words alone cannot tell a thyroid nodule from a breast tumour, the image can.

The rule's default values were chosen on the written list ``clipsam/data/paraphrases.json``
(one half of it; the other half is reported) by :mod:`clipsam.train.word_cut`; the result is in
``docs/results/words/cut.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

UNTRAINED_NOTE = "'{prompt}' is not a trained target; nearest: {nearest} ({similarity:.2f}); " \
                 "teach it with clipsam adapt"


@dataclass(frozen=True)
class WordRule:
    """A prompt reaches its most similar concept when the similarity is >= ``cut``; concepts
    within ``margin`` of the best one (and >= ``cut``) make the prompt ambiguous."""

    cut: float = 0.62  # chosen in docs/results/words/cut.json
    margin: float = 0.0  # chosen in docs/results/words/cut.json (ties: the smallest)

    def __post_init__(self) -> None:
        if not -1.0 <= self.cut <= 1.0 or not 0.0 <= self.margin <= 2.0:
            raise ValueError(f"a word rule needs a cut in [-1, 1] and a margin in [0, 2], got "
                             f"{self.cut}, {self.margin}")


@dataclass(frozen=True)
class Candidate:
    """One concept an ambiguous prompt may mean: its similarity to the prompt (through its
    nearest ``phrase``) and, once the image was scored, its presence score and "not found"
    threshold on that image."""

    concept: str
    similarity: float
    phrase: str
    presence: float | None = None
    threshold: float | None = None

    @property
    def support(self) -> float:
        """:func:`presence_support` of the candidate on the image."""
        return presence_support(self.presence, self.threshold)

    def record(self) -> dict[str, Any]:
        return {"concept": self.concept, "similarity": round(self.similarity, 4),
                "presence": _rounded(self.presence), "threshold": _rounded(self.threshold)}


@dataclass(frozen=True)
class ConceptMatch:
    """Where a prompt landed. ``concept`` is the reached concept (None: the prompt is
    untrained and is grounded by its own words), ``similarity`` that concept's similarity (or
    the nearest one's when none is reached), ``nearest`` the most similar concept and
    ``phrase`` its nearest phrase. ``candidates`` lists the concepts of an ambiguous prompt.
    ``presence`` and ``threshold`` are set once the image was scored
    (:meth:`GroundingModel.reach`), with the operating ``point`` the threshold belongs to and
    the ``statistic`` the score is (``map`` or ``head``)."""

    prompt: str
    concept: str | None
    similarity: float
    nearest: str | None
    phrase: str | None
    candidates: tuple[Candidate, ...] = ()
    presence: float | None = None
    threshold: float | None = None
    point: str | None = None
    statistic: str | None = None

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1

    @property
    def text(self) -> str:
        """What the model grounds: the reached concept's name, else the prompt itself."""
        return self.concept or self.prompt

    @property
    def present(self) -> bool | None:
        if self.presence is None or self.threshold is None:
            return None
        return self.presence >= self.threshold

    def note(self) -> str | None:
        """The one line telling a user the prompt reached no trained concept (else None)."""
        if self.concept is not None:
            return None
        return untrained_note(self.prompt, self.nearest, self.similarity)

    def decisions(self) -> dict[str, Any]:
        """What a result records about the concept: ``concept`` (None when untrained) and
        ``concept_similarity``; the nearest concept and ``untrained`` when none was reached;
        the ``concept_candidates`` of an ambiguous prompt; the presence score and threshold
        used, the operating point (``presence_point``) and the statistic scored
        (``presence_statistic``)."""
        out: dict[str, Any] = {"concept": self.concept,
                               "concept_similarity": round(self.similarity, 4),
                               "concept_phrase": self.phrase if self.concept else None}
        if self.concept is None:
            out.update(untrained=True, nearest_concept=self.nearest)
        if self.ambiguous:
            out["concept_candidates"] = [c.record() for c in self.candidates]
        if self.presence is not None:
            out.update(presence=_rounded(self.presence), threshold=_rounded(self.threshold),
                       presence_point=self.point, presence_statistic=self.statistic)
        return out


def untrained_note(prompt: str, nearest: str | None, similarity: float) -> str:
    """``'X' is not a trained target; nearest: Y (0.41); teach it with clipsam adapt``."""
    return UNTRAINED_NOTE.format(prompt=prompt, nearest=nearest or "none",
                                 similarity=similarity)


def presence_support(presence: float | None, threshold: float | None) -> float:
    """How far a presence score lies above a "not found" threshold, in logits (-inf when
    either is unknown): comparable across concepts with different thresholds."""
    if presence is None or threshold is None:
        return float("-inf")
    return _logit(presence) - _logit(threshold)


def decide(similarities: Mapping[str, float], rule: WordRule,
           members: Sequence[str] = ()) -> tuple[str | None, list[str]]:
    """The concept a prompt reaches (None below the cut) and, when it is ambiguous, every
    candidate (best first; empty otherwise). Ties go to the alphabetically first concept.
    ``members``: the concepts a generic word names (:func:`clipsam.io.vocabulary.generic_category`),
    which are the candidates whatever their similarity (one member is reached outright)."""
    if members:
        ordered = sorted(members, key=lambda c: (-similarities.get(c, 0.0), c))
        return ordered[0], ordered if len(ordered) > 1 else []
    ranked = sorted(similarities.items(), key=lambda item: (-item[1], item[0]))
    if not ranked or ranked[0][1] < rule.cut:
        return None, []
    best = ranked[0][1]
    candidates = [c for c, s in ranked if s >= rule.cut and best - s < rule.margin]
    return ranked[0][0], candidates if len(candidates) > 1 else []


def nearest_phrases(
    prompt_vector: np.ndarray, phrases: Mapping[str, list[str]], vectors: Mapping[str, np.ndarray]
) -> dict[str, tuple[float, str]]:
    """Per concept, (similarity, phrase) of its nearest phrase to the prompt: the cosine of
    unit sentence vectors (``vectors[phrase]``, (D,) each; ``prompt_vector`` (D,))."""
    out = {}
    for concept, names in phrases.items():
        scores = [float(np.dot(prompt_vector, vectors[p])) for p in names]
        best = int(np.argmax(scores))
        out[concept] = (scores[best], names[best])
    return out


def match_words(prompt: str, nearest: Mapping[str, tuple[float, str]],
                rule: WordRule, members: Sequence[str] = ()) -> ConceptMatch:
    """The :class:`ConceptMatch` of a prompt from its concepts' nearest phrases
    (:func:`nearest_phrases`) and the concepts it names as a generic word (``members``, see
    :func:`decide`), before the image is seen."""
    similarities = {c: s for c, (s, _) in nearest.items()}
    concept, candidates = decide(similarities, rule, members)
    top = concept or (min(nearest, key=lambda c: (-similarities[c], c)) if nearest else None)
    return ConceptMatch(
        prompt=prompt, concept=concept,
        similarity=similarities[top] if top is not None else 0.0,
        nearest=top, phrase=nearest[top][1] if top is not None else None,
        candidates=tuple(Candidate(c, similarities[c], nearest[c][1]) for c in candidates))


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-7), 1 - 1e-7)
    return float(np.log(p / (1 - p)))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
