"""Image-caption pairs for fine-tuning an image-text model, from segmentation sets or a caption
table, split by subject into training and held-out pairs.

A segmentation set's image is captioned with one of its concept's target captions
(:func:`clipsam.train.captions.target_captions`, chosen by a hash of the image id, so a rerun
pairs the same way) and grouped by the concept's target; a caption table's row keeps its own
caption, grouped by that caption. Held out are the subjects
:func:`clipsam.io.splits.calibration_of` holds out of the grounding heads' gradient steps.
Images are read when a batch needs them (as the segmenter reads them), not all at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clipsam.io.image import segmenter_input
from clipsam.io.labelled_sets import Sample
from clipsam.io.read import read_image
from clipsam.io.splits import calibration_of
from clipsam.train.captions import Concept, target_captions


class LazyPairs(Sequence):
    """``pairs[i]`` = (the image of ``samples[i]`` as the segmenter reads it, ``captions[i]``)."""

    def __init__(self, samples: Sequence[Sample], captions: Sequence[str]) -> None:
        self.samples, self.captions = list(samples), list(captions)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return segmenter_input(read_image(self.samples[index].image_path)), self.captions[index]


@dataclass(frozen=True)
class PairSplit:
    """Training and held-out pairs with their groups and samples."""

    train: LazyPairs
    train_groups: list[str]
    heldout: LazyPairs
    heldout_groups: list[str]


def _pick(options: Sequence[str], key: str) -> str:
    digest = hashlib.sha256(f"caption/{key}".encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


def caption_pairs(
    samples: Sequence[Sample], concepts: dict[str, Concept] | None = None,
    captions: Sequence[str] | None = None, heldout_fraction: float = 0.15,
) -> PairSplit:
    """Pairs of ``samples`` with ``captions`` (a caption table's) or else a caption of their
    set's concept (``concepts`` by set name), split by subject (``heldout_fraction``)."""
    if captions is None:
        concepts = concepts or {}
        texts = [_pick(target_captions(concepts[s.set_name]), f"{s.set_name}/{s.image_id}")
                 for s in samples]
        groups = [concepts[s.set_name].target for s in samples]
    else:
        texts, groups = list(captions), list(captions)
    held = np.array([calibration_of(s, heldout_fraction) for s in samples], bool)
    parts = [[i for i in range(len(samples)) if held[i] == side] for side in (False, True)]
    train, heldout = ([samples[i] for i in part] for part in parts)
    return PairSplit(LazyPairs(train, [texts[i] for i in parts[0]]), [groups[i] for i in parts[0]],
                     LazyPairs(heldout, [texts[i] for i in parts[1]]),
                     [groups[i] for i in parts[1]])
