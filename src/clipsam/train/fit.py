"""From labelled samples with cached embeddings to a saved grounding model folder."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from clipsam.models.grounding.model import GroundingModel
from clipsam.models.grounding.text_encoder import SentenceEncoder
from clipsam.train.captions import Concept
from clipsam.train.region_data import build_region_data
from clipsam.train.regions import Sample
from clipsam.train.trainer import TrainConfig, fit_grounding_model


def is_calibration(sample: Sample, fraction: float = 0.15) -> bool:
    """Whether a sample's subject is kept out of gradient steps to fit the presence rule."""
    digest = hashlib.sha256(f"calibration/{sample.set_name}/{sample.subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def fit_from_samples(
    samples: Sequence[Sample],
    cache_dir: Path,
    concepts: dict[str, Concept],
    config: TrainConfig,
    out_dir: Path | None,
    captions: Sequence[str] | None = None,
    calibration_fraction: float = 0.15,
    encoder: SentenceEncoder | None = None,
    metadata: dict | None = None,
    progress: bool = True,
) -> GroundingModel:
    """Train on most subjects, calibrate "not found" on the rest, save to ``out_dir``."""
    held = [is_calibration(s, calibration_fraction) for s in samples]
    if all(held) or not any(held):
        held = [False] * len(samples)
    pick = [i for i, h in enumerate(held) if not h]
    cal = [i for i, h in enumerate(held) if h]
    train = build_region_data([samples[i] for i in pick], cache_dir, concepts,
                              [captions[i] for i in pick] if captions is not None else None)
    calibration = (build_region_data([samples[i] for i in cal], cache_dir, concepts,
                                     [captions[i] for i in cal] if captions is not None else None)
                   if cal else None)
    if calibration is not None and {c.target for c in calibration.concepts} != {
            c.target for c in train.concepts}:
        calibration = None
    return fit_grounding_model(train, calibration, config, out_dir, encoder,
                               metadata=metadata, progress=progress)
