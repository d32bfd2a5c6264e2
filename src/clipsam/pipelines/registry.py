"""One place that turns configuration into loaded models and a ready pipeline.

The CLI, the Python API, the server and the batch engines all go through :func:`load_models`
and :func:`build_pipeline`, so there is one way to run a method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clipsam.config import RUNTIMES, SEGMENTERS, ModelConfig, RunConfig
from clipsam.errors import InputError
from clipsam.models.image_text import ImageTextModel
from clipsam.models.segmenter import PromptableSegmenter
from clipsam.pipelines.base import Pipeline


@dataclass(frozen=True)
class Models:
    """The loaded models of a run; ``text`` is None for methods that read no text."""

    segmenter: PromptableSegmenter
    text: ImageTextModel | None
    config: ModelConfig


def load_segmenter(config: ModelConfig) -> PromptableSegmenter:
    from clipsam.models.sam import load_litemedsam, load_sam

    if config.segmenter not in SEGMENTERS:
        raise InputError(f"unknown segmenter {config.segmenter!r}; choose one of "
                         f"{', '.join(SEGMENTERS)}")
    if config.runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {config.runtime!r}; choose one of "
                         f"{', '.join(RUNTIMES)}")
    if config.segmenter == "litemedsam":
        return load_litemedsam(runtime=config.runtime)
    runtime = "torch" if config.runtime == "auto" else config.runtime
    return load_sam(config.segmenter, weights_dir=config.weights_dir, runtime=runtime)


def load_text_model(config: ModelConfig, segmenter: PromptableSegmenter) -> ImageTextModel:
    """The built-in grounding model, a grounding model folder, or a CLIP-family backend."""
    from clipsam.models.grounding import load_grounding_model

    name = config.text_model
    if name == "builtin":
        return load_grounding_model(None, segmenter=segmenter)
    if Path(name).is_dir():
        return load_grounding_model(Path(name), segmenter=segmenter)
    from clipsam.models.clip.factory import load_image_text_model

    return load_image_text_model(name, config.weights_dir)


def load_models(config: ModelConfig, with_text: bool = True) -> Models:
    segmenter = load_segmenter(config)
    text = load_text_model(config, segmenter) if with_text else None
    return Models(segmenter=segmenter, text=text, config=config)


def _medclipsam(config: RunConfig, models: Models) -> Pipeline:
    from clipsam.pipelines.medclipsam import MedClipSamPipeline

    return MedClipSamPipeline(models.segmenter, _need_text(models), config.medclipsam)


def _salip(config: RunConfig, models: Models) -> Pipeline:
    from clipsam.pipelines.salip import SalipPipeline

    return SalipPipeline(models.segmenter, _need_text(models), config.salip)


def _unprompted(config: RunConfig, models: Models) -> Pipeline:
    from clipsam.pipelines.unprompted import UnpromptedPipeline

    return UnpromptedPipeline(models.segmenter, config.salip)


def _whole_box(config: RunConfig, models: Models) -> Pipeline:
    from clipsam.pipelines.unprompted import WholeImageBoxPipeline

    return WholeImageBoxPipeline(models.segmenter)


def weak_pipeline(config: RunConfig) -> Pipeline:
    """The ``weak`` method: a trained network that needs no other model."""
    from clipsam.pipelines.weak import WeakPipeline

    if config.weak_model is None:
        raise InputError("method 'weak' needs --model MODEL_DIR (a folder from clipsam weak-train)")
    return WeakPipeline(config.weak_model)


def _weak(config: RunConfig, models: Models) -> Pipeline:
    return weak_pipeline(config)


def _need_text(models: Models) -> ImageTextModel:
    if models.text is None:
        raise InputError("this method needs a text model; load models with with_text=True")
    return models.text


PIPELINES: dict[str, Callable[[RunConfig, Models], Pipeline]] = {
    "medclipsam": _medclipsam,
    "salip": _salip,
    "unprompted": _unprompted,
    "whole-box": _whole_box,
    "weak": _weak,
}
TEXT_FREE_METHODS = frozenset({"unprompted", "whole-box", "weak"})


def build_pipeline(config: RunConfig, models: Models) -> Pipeline:
    """The pipeline ``config.method`` names, on already loaded models."""
    try:
        factory = PIPELINES[config.method]
    except KeyError:
        raise InputError(f"unknown method {config.method!r}; choose one of "
                         f"{', '.join(sorted(PIPELINES))}") from None
    return factory(config, models)
