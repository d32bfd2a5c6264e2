"""Captions for grounding training: varied sentences for a set's target and its background.

A :class:`Concept` says what a segmentation set's masks show (target phrases, appearance words,
modality phrases) and what the rest of the image is (background phrases). Built-in sets are
described in ``clipsam/data/grounding/concepts.json``; any other set gets a concept from the
user's prompt.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from importlib import resources

_TARGET_TEMPLATES = (
    "{target}",
    "a {target}",
    "the {target}",
    "{appearance} {target}",
    "the {target} in a {modality}",
    "a {modality} showing the {target}",
    "{appearance} {target} in a {modality}",
    "segment the {target}",
)
_BACKGROUND_TEMPLATES = (
    "{background}",
    "the {background}",
    "{background} in a {modality}",
)


@dataclass(frozen=True)
class Concept:
    """One segmentation target and what surrounds it."""

    target: str
    phrases: tuple[str, ...]
    appearance: tuple[str, ...] = ()
    modality: tuple[str, ...] = ()
    background: tuple[str, ...] = ("background", "surrounding tissue")
    may_show: tuple[str, ...] = ()  # other sets whose targets may be visible, unlabelled
    always_shows: tuple[str, ...] = ()  # other sets whose targets every image shows, unlabelled


def builtin_concepts() -> dict[str, Concept]:
    """The concepts of the built-in training sets, keyed by set folder name."""
    text = resources.files("clipsam").joinpath("data/grounding/concepts.json").read_text()
    return {name: Concept(target=entry["target"], phrases=tuple(entry["phrases"]),
                          appearance=tuple(entry["appearance"]),
                          modality=tuple(entry["modality"]),
                          background=tuple(entry["background"]),
                          may_show=tuple(entry.get("may_show", ())),
                          always_shows=tuple(entry.get("always_shows", ())))
            for name, entry in json.loads(text)["sets"].items()}


def cross_source_pairs(concepts: dict[str, Concept]) -> list[tuple[str, str, bool]]:
    """``(target set, image set, shown)`` for every target some other set's images always show:
    ``shown`` True on those sets, False on the sets that can show it neither always nor
    maybe (where it must be "not found"). Sorted by target set, then image set."""
    pairs = []
    for target in sorted(concepts):
        showing = {name for name, c in concepts.items() if target in c.always_shows}
        if not showing:
            continue
        maybe = {name for name, c in concepts.items() if target in c.may_show}
        for name in sorted(concepts):
            if name != target and name not in maybe:
                pairs.append((target, name, name in showing))
    return pairs


def concept_for(set_name: str, prompt: str | None = None) -> Concept:
    """The concept of a set: the user's prompt if given, else the built-in entry."""
    if prompt:
        return Concept(target=prompt, phrases=(prompt,))
    known = builtin_concepts()
    if set_name not in known:
        raise KeyError(f"no built-in concept for set {set_name!r}: give a prompt for it")
    return known[set_name]


def _fill(templates: tuple[str, ...], **slots: tuple[str, ...]) -> list[str]:
    captions = []
    for template in templates:
        needed = [k for k in slots if "{" + k + "}" in template]
        if any(not slots[k] for k in needed):
            continue
        for values in itertools.product(*(slots[k] for k in needed)):
            captions.append(template.format(**dict(zip(needed, values, strict=True))))
    return list(dict.fromkeys(captions))


def target_captions(concept: Concept) -> list[str]:
    """Every caption of the concept's target (phrases x appearance x modality templates)."""
    return _fill(_TARGET_TEMPLATES, target=concept.phrases, appearance=concept.appearance,
                 modality=concept.modality)


def background_captions(concept: Concept) -> list[str]:
    """Every caption of what is not the target in the concept's images."""
    return _fill(_BACKGROUND_TEMPLATES, background=concept.background,
                 modality=concept.modality)
