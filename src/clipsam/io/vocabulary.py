"""Target knowledge shipped with clipsam as data tables: each target's SNOMED CT coding
(``clipsam/data/snomed.json``) and the generic words that name any target of a SNOMED category
(``clipsam/data/generic_words.json``: "tumours", "a lesion" name every morphologically abnormal
structure)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

ARTICLES = ("the ", "a ", "an ")
PLURAL_ENDINGS = ("es", "s")


@cache
def _data(name: str) -> dict[str, Any]:
    return json.loads(resources.files("clipsam").joinpath(f"data/{name}").read_text("utf-8"))


def snomed_table() -> dict[str, Any]:
    """The SNOMED CT table: ``scheme``, ``categories`` (name -> [code, meaning, source]),
    ``targets`` (target -> category, type, optional region) and the ``generic`` entry."""
    return _data("snomed.json")


def target_category(target: str) -> str | None:
    """The SNOMED segmented-property category of a target of the table (None: not listed)."""
    entry = snomed_table()["targets"].get(" ".join(target.lower().split()))
    return None if entry is None else entry["category"]


def generic_category(prompt: str) -> str | None:
    """The category a prompt names when it is one generic word of that category, with or
    without a leading article and a plural ending ("the tumours", "abnormalities" ->
    morphologically abnormal structure); None for any other prompt."""
    key = " ".join(prompt.lower().split())
    for article in ARTICLES:
        if key.startswith(article):
            key = key[len(article):]
            break
    forms = [key, *(key[: -len(e)] for e in PLURAL_ENDINGS if key.endswith(e))]
    if key.endswith("ies"):
        forms.append(key[:-3] + "y")
    for category, words in _data("generic_words.json")["categories"].items():
        if any(form in words for form in forms):
            return category
    return None
