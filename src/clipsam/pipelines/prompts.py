"""Prompt handling shared by the cascades: prompt ensembles and how many targets a prompt names."""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from clipsam.errors import InputError

MAX_PROMPT_CHARS = 300

_NUMBER_WORDS = {"two": 2, "both": 2, "pair": 2, "three": 3, "four": 4, "five": 5}
_PAIRED = re.compile(r"\b(left and right|right and left|bilateral)\b")
_NUMBER = re.compile(r"\b([2-9])\b")


def validate_prompt(prompt: str) -> str:
    """Return the prompt stripped; reject empty or overlong prompts with one clear line."""
    text = " ".join(str(prompt).split())
    if not text:
        raise InputError("empty prompt: say what to segment, e.g. -p 'fetal head'")
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(f"prompt too long: {len(text)} characters (at most {MAX_PROMPT_CHARS})")
    return text


def library_path() -> Path:
    """The prompt library shipped with clipsam (target names, aliases, sentences, templates)."""
    return Path(str(resources.files("clipsam").joinpath("data/prompts.json")))


@cache
def _library() -> dict[str, Any]:
    return json.loads(library_path().read_text(encoding="utf-8"))


def library_target(prompt: str) -> str | None:
    """The library target a prompt names (by its name or an alias), or None."""
    key = " ".join(prompt.lower().split())
    for name, entry in _library()["targets"].items():
        if key == name or key in entry["aliases"]:
            return name
    return None


def prompt_ensemble(prompt: str, use_library: bool = True) -> list[str]:
    """Sentences whose text embeddings are averaged for ``prompt``.

    The user's own words always come first; a library target adds its descriptive sentences,
    any other prompt adds a few generic templates around it.
    """
    prompt = validate_prompt(prompt)
    if not use_library:
        return [prompt]
    target = library_target(prompt)
    if target is not None:
        extra = _library()["targets"][target]["sentences"]
    else:
        extra = [t.format(prompt) for t in _library()["templates"]]
    return [prompt, *[s for s in extra if s != prompt]]


def count_targets(prompt: str) -> int:
    """How many separate objects a prompt names: "left and right lungs" -> 2, else 1."""
    text = prompt.lower()
    if _PAIRED.search(text):
        return 2
    digits = _NUMBER.search(text)
    if digits:
        return int(digits.group(1))
    for word, count in _NUMBER_WORDS.items():
        if re.search(rf"\b{word}\b", text):
            return count
    return 1
