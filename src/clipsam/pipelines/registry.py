"""The one registry of methods, and the one place that turns configuration into loaded models
and a ready pipeline.

Every front end reads :data:`PIPELINES`: ``clipsam segment`` offers all of them, ``clipsam eval``
adds the evaluation-only oracle ``gt-box`` (:data:`clipsam.eval.methods.METHODS`), and the
server offers :data:`SERVED_METHODS`. The CLI, the Python API, the server and the batch engines
all go through :func:`load_models` and :func:`build_pipeline`, so there is one way to run a
method. To add a method, add one :class:`MethodSpec` to :data:`PIPELINES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipsam.config import RUNTIMES, SEGMENTERS, ModelConfig, RunConfig
from clipsam.errors import InputError
from clipsam.models.segmenter import PromptableSegmenter
from clipsam.pipelines.base import Pipeline

if TYPE_CHECKING:  # it imports torch; the CLI parsers read this registry and must stay fast
    from clipsam.models.image_text import ImageTextModel


@dataclass(frozen=True)
class Models:
    """The loaded models of a run; ``text`` is None for methods that read no text."""

    segmenter: PromptableSegmenter
    text: ImageTextModel | None
    config: ModelConfig


def load_segmenter(config: ModelConfig) -> PromptableSegmenter:
    """The configured segmenter, in the resolved runtime, on the resolved device; with
    ``config.embedding_cache`` a :class:`~clipsam.models.embedding_store.StoredEmbeddings`
    over it (the one place a segmenter's store identity is made)."""
    from clipsam.models.device import resolve_device
    from clipsam.models.sam import load_litemedsam, load_sam

    if config.segmenter not in SEGMENTERS:
        raise InputError(f"unknown segmenter {config.segmenter!r}; choose one of "
                         f"{', '.join(SEGMENTERS)}")
    if config.runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {config.runtime!r}; choose one of "
                         f"{', '.join(RUNTIMES)}")
    device = resolve_device(config.device)
    if config.segmenter == "litemedsam":
        segmenter = load_litemedsam(runtime=config.runtime, device=device,
                                    threads=config.threads)
    else:
        segmenter = load_sam(config.segmenter, weights_dir=config.weights_dir,
                             runtime=config.runtime, device=device, threads=config.threads)
    if config.embedding_cache is None:
        return segmenter
    from clipsam.models.embedding_store import EmbeddingStore, StoredEmbeddings, segmenter_identity
    from clipsam.models.sam.factory import segmenter_checkpoint

    identity = segmenter_identity(segmenter,
                                  segmenter_checkpoint(config.segmenter, config.weights_dir))
    return StoredEmbeddings(segmenter, EmbeddingStore(config.embedding_cache, identity))


def grounding_dir(config: ModelConfig) -> Path | None:
    """The grounding-model folder ``config.text_model`` names (the shipped one for "builtin"),
    or None for a CLIP-family name."""
    from clipsam.models.grounding import builtin_model_dir

    if config.text_model == "builtin":
        return builtin_model_dir()
    return Path(config.text_model) if Path(config.text_model).is_dir() else None


HEADS_SEGMENTER = "litemedsam"
"""The segmenter whose features a grounding model's heads read when its metadata does not say
(every model clipsam trains reads LiteMedSAM features)."""


def grounding_metadata(config: ModelConfig) -> dict[str, Any] | None:
    """The ``metadata`` of the grounding model ``config.text_model`` names ({} when its
    config.json is missing or unreadable: the loader reports that), None for a CLIP-family
    name."""
    import json

    from clipsam.models.grounding.model import CONFIG_FILE

    folder = grounding_dir(config)
    if folder is None:
        return None
    try:
        metadata = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))["metadata"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def check_text_model_fits(config: ModelConfig) -> None:
    """Refuse a grounding text model whose heads were trained on another segmenter's features
    (the shapes may match, the meaning does not)."""
    metadata = grounding_metadata(config)
    if metadata is None:
        return
    trained_for = metadata.get("segmenter", HEADS_SEGMENTER)
    if trained_for != config.segmenter:
        raise InputError(f"the text model {config.text_model!r} was trained on {trained_for} "
                         f"image features and cannot read {config.segmenter}'s: use --segmenter "
                         f"{trained_for}, or a CLIP-family --text-model")


def load_text_model(config: ModelConfig, segmenter: PromptableSegmenter) -> ImageTextModel:
    """The built-in grounding model, a grounding model folder, or a CLIP-family backend, on the
    resolved device."""
    from clipsam.models.device import resolve_device
    from clipsam.models.grounding import load_grounding_model

    check_text_model_fits(config)
    device = resolve_device(config.device)
    folder = grounding_dir(config)
    if folder is not None:
        from clipsam.models.sam.factory import pick_runtime

        runtime = pick_runtime(config.runtime, config.segmenter, device)
        return load_grounding_model(folder, segmenter=segmenter, device=device, runtime=runtime,
                                    threads=config.threads)
    from clipsam.models.clip.factory import load_image_text_model
    from clipsam.models.device import use_torch_threads

    use_torch_threads(config.threads)
    return load_image_text_model(config.text_model, config.weights_dir, device=device)


def load_models(config: ModelConfig, with_text: bool = True) -> Models:
    segmenter = load_segmenter(config)
    text = load_text_model(config, segmenter) if with_text else None
    return Models(segmenter=segmenter, text=text, config=config)


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: how to build it and what it needs.

    ``build`` makes the pipeline from the run configuration and the loaded models (None for an
    ``own_model`` method). ``reads_text``: it needs a text model and a prompt.
    ``reports_absence``: it can answer "not found" by itself. ``own_model``: it runs a trained
    model folder (``RunConfig.weak_model``) instead of the installed text model.
    ``uses_segmenter``: it loads the segmenter (and encodes every image); an ``own_model``
    method also does when its model folder reads embeddings (:func:`load_method_models`).
    ``proposes``: it segments everything first (``RunConfig.salip.proposals``).
    """

    build: Callable[[RunConfig, Models | None], Pipeline]
    reads_text: bool = True
    reports_absence: bool = True
    own_model: bool = False
    uses_segmenter: bool = True
    proposes: bool = False


def _medclipsam(config: RunConfig, models: Models | None) -> Pipeline:
    from clipsam.pipelines.medclipsam import MedClipSamPipeline

    return MedClipSamPipeline(_need(models).segmenter, _need_text(models), config.medclipsam,
                              config.presence)


def _salip(config: RunConfig, models: Models | None) -> Pipeline:
    from clipsam.pipelines.salip import SalipPipeline

    return SalipPipeline(_need(models).segmenter, _need_text(models), config.salip,
                         config.presence)


def _unprompted(config: RunConfig, models: Models | None) -> Pipeline:
    from clipsam.pipelines.unprompted import UnpromptedPipeline

    return UnpromptedPipeline(_need(models).segmenter, config.salip)


def _whole_box(config: RunConfig, models: Models | None) -> Pipeline:
    from clipsam.pipelines.unprompted import WholeImageBoxPipeline

    return WholeImageBoxPipeline(_need(models).segmenter)


def _weak(config: RunConfig, models: Models | None) -> Pipeline:
    """A network trained by ``clipsam weak-train``, alone (``weak``) or prompting the segmenter
    with boxes around its mask (``weak-box``)."""
    from clipsam.pipelines.weak import WeakPipeline

    if config.weak_model is None:
        raise InputError(f"method {config.method!r} needs --model MODEL_DIR (a folder from "
                         "clipsam weak-train)")
    from clipsam.models.device import resolve_device, use_torch_threads

    use_torch_threads(config.models.threads)
    if config.method == "weak-box":
        _need(models)
    segmenter = models.segmenter if models is not None else None
    return WeakPipeline(config.weak_model, device=resolve_device(config.models.device),
                        segmenter=segmenter, box_rule=config.medclipsam.box_rule,
                        decode=config.method == "weak-box")


def _need(models: Models | None) -> Models:
    if models is None:
        raise InputError("this method needs the segmenter; load it with load_models")
    return models


def _need_text(models: Models | None) -> ImageTextModel:
    text = _need(models).text
    if text is None:
        raise InputError("this method needs a text model; load models with with_text=True")
    return text


PIPELINES: dict[str, MethodSpec] = {
    "medclipsam": MethodSpec(_medclipsam),
    "salip": MethodSpec(_salip, proposes=True),
    "unprompted": MethodSpec(_unprompted, reads_text=False, reports_absence=False,
                             proposes=True),
    "whole-box": MethodSpec(_whole_box, reads_text=False, reports_absence=False),
    "weak": MethodSpec(_weak, reads_text=False, own_model=True, uses_segmenter=False),
    "weak-box": MethodSpec(_weak, reads_text=False, own_model=True),
}
TEXT_FREE_METHODS = frozenset(name for name, spec in PIPELINES.items() if not spec.reads_text)
SERVED_METHODS = tuple(name for name, spec in PIPELINES.items() if not spec.own_model)
"""The methods the server offers: those that run on the installed models alone."""


def method_spec(name: str) -> MethodSpec:
    """The registered method ``name``."""
    try:
        return PIPELINES[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; choose one of "
                         f"{', '.join(sorted(PIPELINES))}") from None


def load_method_models(config: RunConfig) -> Models | None:
    """The installed models ``config.method`` uses (resolved ``config``): the segmenter, and
    the text model if it reads text; None for a method that runs only its own model folder."""
    if not loads_segmenter(config):
        return None
    return load_models(config.models, with_text=method_spec(config.method).reads_text)


def loads_segmenter(config: RunConfig) -> bool:
    """Whether ``config``'s method loads the segmenter: by its spec, or because its model
    folder holds a network that reads the segmenter's embedding."""
    spec = method_spec(config.method)
    return spec.uses_segmenter or (spec.own_model and config.weak_model is not None
                                   and weak_model_reads_embedding(config.weak_model))


def weak_model_reads_embedding(model_dir: Path) -> bool:
    """Whether a ``clipsam weak-train`` folder holds a ``head`` network (it needs the
    segmenter's embedding, so the segmenter, even for ``--method weak``)."""
    from clipsam.models.weak_net import WeakModelConfig

    return WeakModelConfig.load(model_dir).reads_embedding


def weak_model_warning(config: RunConfig) -> str:
    """The warning ``clipsam weak-train`` recorded for ``config``'s model folder (its student
    did not show that it learned); "" for a method without one, or a student that learned."""
    spec = PIPELINES.get(config.method)  # None for an evaluation oracle (gt-box)
    if spec is None or not spec.own_model or config.weak_model is None:
        return ""
    from clipsam.models.weak_net import WeakModelConfig

    return WeakModelConfig.load(config.weak_model).warning


def build_pipeline(config: RunConfig, models: Models | None) -> Pipeline:
    """The pipeline ``config.method`` names, on already loaded models (None for a method that
    runs its own model folder). A "not found" operating point other than ``recall`` is refused
    for a method that reads no text (it never decides presence)."""
    spec = method_spec(config.method)
    if config.presence != "recall" and not spec.reads_text:
        raise InputError(f"method {config.method!r} reads no text and never answers 'not "
                         f"found': --presence {config.presence} does not apply")
    return spec.build(config, models)
