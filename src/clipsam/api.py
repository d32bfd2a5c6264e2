"""The Python API: ``clipsam.segment(image, "fetal head")`` and a reusable :class:`Segmenter`.

``segment`` is the one-call form; it keeps the models of its last configuration loaded, so a loop
over images does not reload them. :class:`Segmenter` is the explicit form: it loads the models of
one :class:`~clipsam.config.RunConfig` once, encodes each image once and answers any number of
prompts from that single cached embedding.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipsam.config import ModelConfig, RunConfig, VolumeConfig
from clipsam.errors import InputError
from clipsam.models.image_text import ImageTextModel
from clipsam.models.segmenter import Geometry, ImageEmbedding, PromptableSegmenter
from clipsam.pipelines.base import Pipeline, PipelineResult
from clipsam.pipelines.prompts import validate_prompt
from clipsam.pipelines.timing import checkpoint


@dataclass(frozen=True)
class SegmentResult:
    """The answer to one prompt on one image (or volume).

    ``mask`` is bool, (H, W) for an image and (Z, H, W) for a volume. ``boxes`` are the (K, 4)
    xyxy segmenter prompts in original pixels; for a volume they are (K, 5) rows
    ``(slice, x0, y0, x1, y1)``. ``provenance`` records the models, runtime, package versions,
    configuration and per-stage timings (seconds) that produced the mask; ``decisions`` the
    settings the pipeline resolved for this prompt, which the configuration leaves to the
    model: with the built-in model, the trained concept the prompt reached (``concept``, None
    when untrained, and ``concept_similarity``; ``concept_candidates`` when the image decided
    between several), its presence score and threshold, and the concept's calibrated mask
    source, map level and box margin; a volume's also say, under ``volume``, how it was made
    consistent along the slice axis (settings and where each came from, runs of slices,
    propagated slices, dropped components).
    """

    mask: np.ndarray
    found: bool
    boxes: np.ndarray
    scores: np.ndarray
    prompt: str
    method: str
    geometry: Geometry | None
    provenance: dict[str, Any]
    intermediates: dict[str, Any] = field(default_factory=dict)
    decisions: dict[str, Any] = field(default_factory=dict)

    @property
    def concept_note(self) -> str | None:
        """``'X' is not a trained target; nearest: Y (0.41); teach it with clipsam adapt``
        when the prompt reached no trained concept of the model (else None)."""
        from clipsam.models.grounding.words import untrained_note

        if not self.decisions.get("untrained"):
            return None
        return untrained_note(self.prompt, self.decisions.get("nearest_concept"),
                              float(self.decisions.get("concept_similarity", 0.0)))

    def to_record(self) -> dict[str, Any]:
        """A JSON-serialisable summary (everything but the mask pixels and intermediates)."""
        geometry = None
        if self.geometry is not None:
            geometry = {"original_size": list(self.geometry.original_size),
                        "resized_size": list(self.geometry.resized_size),
                        "input_size": self.geometry.input_size}
        return {
            "prompt": self.prompt,
            "method": self.method,
            "found": self.found,
            "mask_shape": list(self.mask.shape),
            "mask_pixels": int(self.mask.sum()),
            "boxes": np.asarray(self.boxes, dtype=float).round(2).tolist(),
            "scores": np.asarray(self.scores, dtype=float).round(4).tolist(),
            "geometry": geometry,
            "decisions": self.decisions,
            "provenance": self.provenance,
        }


def image_key(image: np.ndarray) -> str:
    """A content hash identifying an image array (shape, dtype and pixels)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.shape}{image.dtype}".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def read_input(image_or_path: Any) -> Any:
    """A path read as a :class:`~clipsam.io.image.MedicalImage`; anything else as given."""
    if isinstance(image_or_path, (str, os.PathLike)):
        from clipsam.io import read_image

        return read_image(Path(image_or_path))
    return image_or_path


def load_planes(image_or_path: Any) -> list[np.ndarray]:
    """The 2-D planes to segment: one for an image, one per slice for a volume.

    Accepts a path (any format :func:`clipsam.io.read_image` reads), a
    :class:`~clipsam.io.image.MedicalImage`, a PIL image or an (H, W) / (H, W, C) array.
    """
    from clipsam.io.image import MedicalImage, segmenter_input

    image_or_path = read_input(image_or_path)
    if isinstance(image_or_path, MedicalImage):
        return [segmenter_input(plane) for plane in image_or_path.slices()]
    array = np.asarray(image_or_path)
    if array.size and (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))):
        if array.ndim == 3 and array.shape[2] == 1:
            return [array[..., 0]]
        return [array[..., :3] if array.ndim == 3 else array]
    raise InputError(f"cannot segment an array of shape {array.shape}: "
                     "expected a non-empty (H, W) or (H, W, C) with C in 1, 3, 4")


class Segmenter:
    """Models of one configuration, loaded once; the embeddings of the last ``cache_images``
    images (planes) kept, keyed by content hash, least recently used dropped first.

    ``Segmenter(RunConfig(method="salip"))`` loads the models through the pipeline registry.
    ``pipeline`` and ``encoder`` (and ``text``, the text model inside the pipeline) may be given
    instead: already-built parts of the same configuration (the server's shared models, tests).
    The configuration is resolved first (:func:`clipsam.pipelines.provenance.run_identity`), so
    a missing device or model file is reported before anything loads.
    """

    def __init__(
        self,
        config: RunConfig | None = None,
        *,
        pipeline: Pipeline | None = None,
        encoder: PromptableSegmenter | None = None,
        text: ImageTextModel | None = None,
        cache_images: int = 1,
    ) -> None:
        from clipsam.pipelines.provenance import run_identity

        if cache_images < 1:
            raise InputError(f"cache_images must be at least 1, got {cache_images}")

        self.config = config or RunConfig()
        self.identity = run_identity(self.config)
        load_seconds = 0.0
        if pipeline is None or encoder is None:
            from clipsam.pipelines.registry import build_pipeline, load_method_models

            start = time.perf_counter()
            resolved = self.identity.config
            models = load_method_models(resolved)
            pipeline = build_pipeline(resolved, models)
            encoder, text = (models.segmenter, models.text) if models else (None, None)
            load_seconds = time.perf_counter() - start
        self.pipeline = pipeline
        self.encoder = encoder
        self.text = text
        self.load_seconds = load_seconds
        self.cache_images = cache_images
        self._cache: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._cache_lock = threading.Lock()

    def embedding(self, plane: np.ndarray) -> tuple[ImageEmbedding, float]:
        """The plane's embedding and the seconds spent encoding it (0 when it was cached)."""
        key = image_key(plane)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key], 0.0
        start = time.perf_counter()
        embedding = self.encoder.encode(plane)
        seconds = time.perf_counter() - start
        with self._cache_lock:
            self._cache[key] = embedding
            while len(self._cache) > self.cache_images:
                self._cache.popitem(last=False)
        return embedding, seconds

    @functools.cached_property
    def provenance(self) -> dict[str, Any]:
        """The settings key, models (files, hashes, runtime, device actually used), package
        versions and resolved configuration behind every result."""
        weak = self.pipeline.model if "weak_model" in self.identity.roles else None
        return self.identity.describe(self.encoder, self.text, weak).record()

    def segment(self, image: Any, prompts: str | Sequence[str],
                progress: Callable[[int, int], None] | None = None) -> list[SegmentResult]:
        """One result per prompt; the image (each slice of a volume) is encoded only once.

        A volume is segmented as ``config.volume`` says (:mod:`clipsam.pipelines.volume`), its
        slices streamed; ``progress(done, total)`` is called after each slice (once for a 2-D
        image).
        """
        from clipsam.pipelines.volume import drain

        return drain(self.segment_stream(image, prompts),
                     None if progress is None else lambda step: progress(*step))

    def segment_stream(self, image: Any, prompts: str | Sequence[str]
                       ) -> Generator[tuple[int, int], None, list[SegmentResult]]:
        """:meth:`segment` as a generator: yields ``(slices done, slices)`` after each slice of
        a volume (once for a 2-D image) and returns the results."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise InputError("no prompt: say what to segment, e.g. 'fetal head'")
        prompts = [validate_prompt(p) for p in prompts]
        image = read_input(image)
        if getattr(image, "is_volume", False):
            return (yield from self._segment_volume(image, prompts))
        results = self._segment_plane(load_planes(image)[0], prompts)
        yield 1, 1
        return results

    def _segment_volume(self, image: Any, prompts: list[str]
                        ) -> Generator[tuple[int, int], None, list[SegmentResult]]:
        """Every slice of a volume, streamed (:func:`clipsam.pipelines.volume.segment_volume`)."""
        from clipsam.io.image import segmenter_input
        from clipsam.pipelines.volume import segment_volume

        total = image.num_slices
        planes = (segmenter_input(image.slice(z)) for z in range(total))
        geometry: list[Geometry] = []

        def embed(plane: np.ndarray) -> tuple[ImageEmbedding | None, float]:
            if self.encoder is None:
                return None, 0.0
            embedding, seconds = self.embedding(plane)
            geometry[:] = geometry or [embedding.geometry]
            return embedding, seconds

        stream = segment_volume(self.pipeline, planes, prompts, self.config.volume, embed,
                                self.config.keep_intermediates)
        while True:
            try:
                done = next(stream)
            except StopIteration as stop:
                outcomes = stop.value
                break
            yield done, total
        return [SegmentResult(
            mask=o.mask, found=o.found, boxes=o.boxes, scores=o.scores, prompt=o.prompt,
            method=o.method, geometry=geometry[0] if geometry else None,
            provenance={**self.provenance, "timings": o.timings, "slices": total},
            intermediates=o.intermediates, decisions=o.decisions) for o in outcomes]

    def _segment_plane(self, plane: np.ndarray, prompts: list[str]) -> list[SegmentResult]:
        """Each prompt on one plane; a :func:`~clipsam.pipelines.timing.checkpoint` before
        encoding and before each prompt."""
        checkpoint()
        embedding, encode_seconds = (self.embedding(plane) if self.encoder is not None
                                     else (None, 0.0))
        results = []
        for index, prompt in enumerate(prompts):
            checkpoint()
            start = time.perf_counter()
            raw: PipelineResult = self.pipeline.run(
                plane, prompt, embedding=embedding,
                keep_intermediates=self.config.keep_intermediates)
            timings = {"encode": encode_seconds if index == 0 else 0.0,
                       **{k: float(v) for k, v in raw.timings.items()},
                       "total": time.perf_counter() - start
                       + (encode_seconds if index == 0 else 0.0)}
            provenance = {**self.provenance, "timings": timings}
            results.append(SegmentResult(
                mask=np.asarray(raw.mask, dtype=bool), found=bool(raw.found),
                boxes=np.asarray(raw.boxes, dtype=np.float32).reshape(-1, 4),
                scores=np.asarray(raw.scores, dtype=np.float32).reshape(-1),
                prompt=prompt, method=raw.method,
                geometry=embedding.geometry if embedding is not None else None,
                provenance=provenance, intermediates=dict(raw.intermediates),
                decisions=dict(raw.decisions)))
        return results

    def concepts(self) -> list[str]:
        """Every trained and adapted concept of the text model (what :meth:`segment_all`
        looks for)."""
        names = list(getattr(self.text, "concept_names", None) or [])
        if not names:
            raise InputError(f"method {self.config.method!r} has no text model with trained "
                             "concepts: finding every target needs the built-in grounding "
                             "model or a fine-tuned or adapted one")
        return names

    def segment_all(self, image: Any, found_only: bool = True,
                    progress: Callable[[int, int], None] | None = None) -> list[SegmentResult]:
        """What is in this image: every trained and adapted concept (:meth:`concepts`), each
        image plane encoded once; a volume is segmented as :meth:`segment` does it (every
        concept decided along the slice axis, ``progress`` after each slice). The results of
        the concepts found (every concept's with ``found_only=False``), those furthest above
        their own "not found" threshold first (``decisions["presence"]`` and
        ``decisions["threshold"]``; a volume, whose slices' scores differ, keeps the concepts'
        order)."""
        from clipsam.models.grounding.words import presence_support

        results = self.segment(image, self.concepts(), progress=progress)
        results = sorted(results, reverse=True, key=lambda r: presence_support(
            r.decisions.get("presence"), r.decisions.get("threshold")))
        return [r for r in results if r.found or not found_only]

    def segment_boxes(self, image: Any, boxes: Any, prompt: str = "boxes") -> SegmentResult:
        """The segmenter's mask for boxes a person drew on a 2-D image, labelled ``prompt``.

        ``boxes`` are (K, 4) ``[x1, y1, x2, y2]`` in original pixels (exclusive far corner,
        :mod:`clipsam.postprocess.boxes`); each box's mask keeps its largest component, holes
        filled, and the masks are united, as the cascades do. The image's cached embedding is
        reused: a correction after :meth:`segment` costs one decoder pass, no encoder pass.
        """
        from clipsam.pipelines.common import segment_boxes
        from clipsam.pipelines.timing import StageTimer
        from clipsam.postprocess.boxes import check_boxes

        if self.encoder is None:
            raise InputError(f"method {self.config.method!r} loads no segmenter: use another "
                             "method for box prompts")
        planes = load_planes(image)
        if len(planes) != 1:
            raise InputError(f"boxes apply to a 2-D image; this is a volume of {len(planes)} "
                             "slices")
        plane = planes[0]
        boxes = check_boxes(boxes, plane.shape[:2])
        checkpoint()
        embedding, encode_seconds = self.embedding(plane)
        timer = StageTimer()
        if len(boxes):
            mask, prediction = segment_boxes(self.encoder, embedding, boxes, timer)
            scores = np.asarray(prediction.scores, np.float32).reshape(-1)
        else:
            mask, scores = np.zeros(plane.shape[:2], bool), np.zeros(0, np.float32)
        timings = timer.total()
        timings = {"encode": encode_seconds, **timings,
                   "total": timings["total"] + encode_seconds}
        return SegmentResult(mask=mask, found=bool(mask.any()), boxes=boxes, scores=scores,
                             prompt=validate_prompt(prompt), method="boxes",
                             geometry=embedding.geometry,
                             provenance={**self.provenance, "timings": timings})


def found_line(results: Sequence[SegmentResult]) -> str:
    """What "every trained target" found, in one line: ``found lungs (0.93), heart (0.71)``
    (presence scores, when recorded) or ``no trained target found``."""
    found = [f"{r.prompt} ({r.decisions['presence']:.2f})"
             if r.decisions.get("presence") is not None else r.prompt
             for r in results if r.found]
    return f"found {', '.join(found)}" if found else "no trained target found"


def run_config(method: str = "medclipsam", **options: Any) -> RunConfig:
    """A :class:`RunConfig` from flat options.

    Model options (``segmenter``, ``runtime``, ``device``, ``text_model``, ``weights_dir``) go to
    :class:`~clipsam.config.ModelConfig`; ``keep_intermediates``, ``salip``, ``medclipsam`` and
    ``volume`` to the run, ``volume_mode`` (``consistent`` or ``slices``) to its
    :class:`~clipsam.config.VolumeConfig`; any other name must be a parameter of the chosen
    method (e.g. ``top_k`` for salip).
    """
    if "volume_mode" in options:
        volume = options.pop("volume", None) or VolumeConfig()
        options["volume"] = dataclasses.replace(volume, mode=options.pop("volume_mode"))
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    run_fields = {f.name for f in dataclasses.fields(RunConfig)} - {"method", "models"}
    config = RunConfig(method=method)
    model_options = {k: v for k, v in options.items() if k in model_fields}
    run_options = {k: v for k, v in options.items() if k in run_fields}
    config = dataclasses.replace(
        config, models=dataclasses.replace(config.models, **model_options), **run_options)
    rest = {k: v for k, v in options.items() if k not in model_fields | run_fields}
    if rest:
        method_config = getattr(config, method, None)
        known = ({f.name for f in dataclasses.fields(method_config)}
                 if dataclasses.is_dataclass(method_config) else set())
        unknown = sorted(set(rest) - known)
        if unknown:
            raise InputError(f"unknown option {unknown[0]!r} for method {method!r}")
        config = dataclasses.replace(
            config, **{method: dataclasses.replace(method_config, **rest)})
    return config


@functools.lru_cache(maxsize=1)
def _cached_segmenter(config: RunConfig) -> Segmenter:
    return Segmenter(config)


def segment(
    image_or_path: Any, prompt: str, method: str = "medclipsam", **options: Any
) -> SegmentResult:
    """Segment what ``prompt`` names in an image, a volume or an image file.

    ``clipsam.segment("scan.png", "left and right lungs", method="salip", runtime="onnx")``.
    Options are those of :func:`run_config`. The models stay loaded for the next call with the
    same options.
    """
    config = run_config(method, **options)
    return _cached_segmenter(config).segment(image_or_path, [prompt])[0]
