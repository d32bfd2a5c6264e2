"""The written paraphrase list (``clipsam/data/paraphrases.json``): users' wordings of the
trained targets and the concepts each may mean, split in two halves by a hash of the phrase.

The ``choose`` half picks the word rule (:mod:`clipsam.train.word_cut`); the ``report`` half
is only scored, by words (the same module) and through the product path on held-out images
(:mod:`clipsam.eval.word_measures`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from clipsam.errors import InputError
from clipsam.models.grounding.model import concept_key

HALVES = ("choose", "report")


@dataclass(frozen=True)
class Paraphrase:
    """A user's wording and the concepts it may mean (none: an untrained target)."""

    phrase: str
    concepts: tuple[str, ...]
    kind: str

    @property
    def half(self) -> str:
        return half_of(self.phrase)


def paraphrase_path() -> Path:
    """The paraphrase list shipped with clipsam."""
    return Path(str(resources.files("clipsam").joinpath("data/paraphrases.json")))


def load_paraphrases(path: Path | None = None) -> list[Paraphrase]:
    """The entries of a paraphrase list (default: the shipped one), phrases lower-cased."""
    path = Path(path) if path is not None else paraphrase_path()
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["entries"]
        out = [Paraphrase(concept_key(e["phrase"]), tuple(concept_key(c) for c in e["concepts"]),
                          str(e["kind"])) for e in entries]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path} is not a paraphrase list: {exc}") from None
    phrases = [p.phrase for p in out]
    if len(set(phrases)) != len(phrases):
        raise InputError(f"{path} lists a phrase twice")
    return out


def half_of(phrase: str) -> str:
    """``choose`` or ``report``, by the parity of the SHA-256 of the lower-cased phrase."""
    digest = hashlib.sha256(concept_key(phrase).encode()).digest()
    return HALVES[digest[0] % 2]
