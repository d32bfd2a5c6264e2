"""The built-in text-grounding model: locked towers, small trained heads, a learned "not found".

Images are read through a segmenter's :class:`ImageEmbedding` (computed once per image by the
pipeline); texts through the locked sentence encoder. A model folder holds
``heads.safetensors`` (the heads, plus the concept vectors and feature probes learned by
``clipsam adapt`` and the image-level presence heads, :mod:`.presence_head`) and
``config.json`` (sizes, the presence rule, the calibrated per-concept thresholds of each
"not found" operating point and the presence statistic chosen, mask sources and map levels,
the calibrated ``volume`` settings, the phrases that name each trained concept, adapted concept
names, and metadata on how it was trained: data, subjects, calibration).

A prompt reaches a trained or adapted concept by meaning (:mod:`.words`: its nearest phrase
through the sentence encoder, above a similarity cut; an ambiguous prompt is decided by the
image, :meth:`GroundingModel.reach`). A prompt that reached a concept is grounded as that concept
(its name's text vector, or its adapted vector and probe) with the concept's calibrated "not
found" threshold, mask source, map level and box margin; any other prompt by its own words with
the model-wide threshold and the segmenter. The map and score methods (``logit_map``,
``similarity_map``, ``presence_score``) ground the literal text they are given.

"Not found" has three operating points (:data:`clipsam.config.PRESENCE_POINTS`): ``recall``
(``concept_thresholds`` and ``PresenceRule.threshold``, the default) and ``balanced`` and
``precision`` (``concept_points`` and the rule's model-wide ones). A model calibrated before
the points existed has only ``recall`` and refuses the others.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipsam.config import PRESENCE_POINTS
from clipsam.errors import InputError, WeightsError
from clipsam.io.atomic import write_atomic, write_text_atomic
from clipsam.io.vocabulary import generic_category, target_category
from clipsam.models.grounding.engine import HeadsEngine, TorchHeads, onnx_heads
from clipsam.models.grounding.grid import agreement, mask_to_grid, valid_mask
from clipsam.models.grounding.presence_head import (
    LAYOUT,
    head_input,
    head_score,
    input_size,
    map_features,
    pooled_features,
)
from clipsam.models.grounding.text_encoder import SentenceEncoder
from clipsam.models.grounding.words import (
    Candidate,
    ConceptMatch,
    WordRule,
    match_words,
    nearest_phrases,
)
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter

if TYPE_CHECKING:  # the ONNX engine runs without torch
    from clipsam.models.grounding.heads import GroundingHeads

FORMAT = "clipsam-grounding"
HEADS_FILE = "heads.safetensors"
CONFIG_FILE = "config.json"
CONCEPT_PREFIX = "concept."
PROBE_PREFIX = "probe."
PRESENCE_PREFIX = "presence."
STATISTICS = ("map", "head")
# the decoder adapter in a model folder (clipsam.models.sam.prompt_adapter): its weights, its
# config and the ONNX graph of the adapted decoder the pipeline runs
ADAPTER_FILE, ADAPTER_CONFIG = "decoder_adapter.safetensors", "decoder_adapter.json"
ADAPTER_GRAPH, ADAPTER_FORMAT = "decoder_adapter.onnx", "clipsam-decoder-adapter"


MASK_SOURCES = ("segmenter", "map", "union", "decoder")
VOLUME_SETTINGS = ("smoothing", "hold", "reach", "margin", "cleanup", "min_component")
"""The calibrated settings of the model's ``volume`` block (:class:`clipsam.config.VolumeConfig`),
model-wide: how volumes are segmented consistently along the slice axis."""


@dataclass(frozen=True)
class PresenceRule:
    """Target present when ``sigmoid(mean of the top_k highest cell logits)`` >= threshold.

    ``threshold`` is the model-wide ``recall`` operating point (prompts that reach no concept,
    concepts without calibration images); ``balanced`` and ``precision`` the model-wide other
    points (None in a model calibrated before they existed)."""

    top_k: int = 4
    threshold: float = 0.5
    balanced: float | None = None
    precision: float | None = None

    def at(self, point: str) -> float | None:
        """The model-wide threshold of an operating point (None when not calibrated)."""
        return self.threshold if point == "recall" else getattr(self, point)


def concept_key(text: str) -> str:
    """How prompts and concept names are compared: lower case, single spaces."""
    return " ".join(text.lower().split())


class GroundingModel:
    """Grounds free text on a segmenter embedding (implements ImageTextModel, DenseGrounding).

    ``heads`` is the torch module (training, adaptation); ``engine`` runs the heads at inference
    (default: that module). A model loaded with ``runtime="onnx"`` has only the engine; its
    ``heads`` load from ``source_dir`` when training code asks for them.
    """

    name = "clipsam-grounding"

    def __init__(
        self,
        heads: GroundingHeads | None,
        presence: PresenceRule | None = None,
        concepts: dict[str, np.ndarray] | None = None,
        concept_thresholds: dict[str, float] | None = None,
        text_encoder: SentenceEncoder | None = None,
        segmenter: PromptableSegmenter | None = None,
        metadata: dict | None = None,
        concept_phrases: dict[str, Sequence[str]] | None = None,
        mask_sources: dict[str, str] | None = None,
        engine: HeadsEngine | None = None,
        heads_config: dict | None = None,
        concept_probes: dict[str, np.ndarray] | None = None,
        map_levels: dict[str, float] | None = None,
        box_margins: dict[str, float] | None = None,
        volume: dict | None = None,
        word_rule: WordRule | None = None,
        concept_points: dict[str, dict[str, float]] | None = None,
        presence_heads: dict[str, np.ndarray] | None = None,
        presence_statistics: dict[str, str] | None = None,
    ) -> None:
        if heads is None and engine is None:
            raise ValueError("a grounding model needs its heads or an engine")
        self._heads = heads.eval() if heads is not None else None
        self.engine: HeadsEngine = engine or TorchHeads(heads)
        self.heads_config = dict(heads_config or heads.config.to_dict())
        self.device = self.engine.device
        self.presence = presence or PresenceRule()
        self.concepts = {concept_key(k): np.asarray(v, np.float32)
                         for k, v in (concepts or {}).items()}
        self.concept_probes = {concept_key(k): np.asarray(v, np.float32)
                               for k, v in (concept_probes or {}).items()}
        unknown_probes = set(self.concept_probes) - set(self.concepts)
        if unknown_probes:
            raise WeightsError(f"feature probes without a concept vector: "
                               f"{sorted(unknown_probes)}")
        probe_size = self.heads_config["feature_dim"] + 1
        if any(v.shape != (probe_size,) for v in self.concept_probes.values()):
            raise WeightsError(f"a feature probe must hold {probe_size} values (weights and "
                               "a bias)")
        self.concept_thresholds = {concept_key(k): float(v)
                                   for k, v in (concept_thresholds or {}).items()}
        self.metadata = dict(metadata or {})
        self.concept_phrases = {concept_key(k): sorted({concept_key(p) for p in v})
                                for k, v in (concept_phrases or {}).items()}
        self._phrase_index = {p: k for k, v in self.concept_phrases.items() for p in v}
        self.mask_sources = {concept_key(k): v for k, v in (mask_sources or {}).items()}
        unknown = set(self.mask_sources.values()) - set(MASK_SOURCES)
        if unknown:
            raise WeightsError(f"unknown mask source(s) {sorted(unknown)}; "
                               f"expected {', '.join(MASK_SOURCES)}")
        self.map_levels = {concept_key(k): float(v) for k, v in (map_levels or {}).items()}
        if any(not 0 < v < 1 for v in self.map_levels.values()):
            raise WeightsError("map levels must lie between 0 and 1")
        self.box_margins = {concept_key(k): float(v) for k, v in (box_margins or {}).items()}
        if any(not 0 <= v < 1 for v in self.box_margins.values()):
            raise WeightsError("box margins must lie in [0, 1)")
        self.volume = dict(volume or {})
        unknown_volume = set(self.volume) - set(VOLUME_SETTINGS)
        if unknown_volume:
            raise WeightsError(f"unknown volume setting(s) {sorted(unknown_volume)}; expected "
                               f"{', '.join(VOLUME_SETTINGS)}")
        self.word_rule = word_rule or WordRule()
        self.concept_points = {concept_key(k): {p: float(t) for p, t in v.items()}
                               for k, v in (concept_points or {}).items()}
        if any(set(v) != set(PRESENCE_POINTS[1:]) for v in self.concept_points.values()):
            raise WeightsError(f"a concept's presence points must be {PRESENCE_POINTS[1:]}")
        if (self.presence.balanced is None) != (self.presence.precision is None):
            raise WeightsError("the presence rule needs both or none of balanced and precision")
        if self.concept_points and self.presence.balanced is None:
            raise WeightsError("per-concept presence points need the model-wide ones")
        self.presence_heads = {concept_key(k): np.asarray(v, np.float64)
                               for k, v in (presence_heads or {}).items()}
        head_size = input_size(self.heads_config["feature_dim"]) + 1
        if any(v.shape != (head_size,) for v in self.presence_heads.values()):
            raise WeightsError(f"a presence head must hold {head_size} values (weights and a "
                               "bias)")
        self.presence_statistics = {concept_key(k): v
                                    for k, v in (presence_statistics or {}).items()}
        if set(self.presence_statistics.values()) - set(STATISTICS):
            raise WeightsError(f"presence statistics must be one of {', '.join(STATISTICS)}")
        headless = {k for k, v in self.presence_statistics.items() if v == "head"} - set(
            self.presence_heads)
        if headless:
            raise WeightsError(f"presence head chosen but missing for {sorted(headless)}")
        self.source_dir: Path | None = None  # the folder it was loaded from, if any
        self._text_encoder = text_encoder
        self._segmenter = segmenter
        self._text_cache: dict[str, np.ndarray] = {}
        self._patch_cache: tuple[np.ndarray, np.ndarray] | None = None
        self._pooled_cache: tuple[np.ndarray, np.ndarray] | None = None

    # --- towers -----------------------------------------------------------------------------

    @property
    def runtime(self) -> HeadsEngine:
        """What runs the heads (its name, provider and graph files go into run records)."""
        return self.engine

    @property
    def heads(self) -> GroundingHeads:
        """The heads as a torch module (loaded from ``source_dir`` for an ONNX-run model)."""
        if self._heads is None:
            if self.source_dir is None:
                raise WeightsError("this grounding model has no torch heads and no folder")
            self._heads = load_heads(self.source_dir, self.heads_config, self.device)
        return self._heads

    @property
    def text_encoder(self) -> SentenceEncoder:
        if self._text_encoder is None:
            self._text_encoder = SentenceEncoder()
        return self._text_encoder

    @property
    def segmenter(self) -> PromptableSegmenter:
        if self._segmenter is None:
            from clipsam.models.sam import load_litemedsam

            self._segmenter = load_litemedsam()
        return self._segmenter

    def text_vector(self, text: str) -> np.ndarray:
        """(D,) unit vector of one prompt: its adapted concept vector if it has one."""
        key = concept_key(text)
        if not key:
            raise InputError("the text prompt is empty")
        if key in self.concepts:
            return self.concepts[key]
        if key not in self._text_cache:
            self._text_cache[key] = self.engine.text(self.text_encoder([key]))[0]
        return self._text_cache[key]

    def patch_embeddings(self, embedding: ImageEmbedding) -> np.ndarray:
        """(D, h, w) unit patch vectors; the last image's are cached."""
        features = embedding.features
        if self._patch_cache is not None and self._patch_cache[0] is features:
            return self._patch_cache[1]
        feature_dim = self.heads_config["feature_dim"]
        if features.ndim != 4 or features.shape[1] != feature_dim:
            raise InputError(f"grounding needs (1, {feature_dim}, h, w) features, got "
                             f"{tuple(features.shape)}")
        patches = self.engine.patch(np.asarray(features, np.float32))
        self._patch_cache = (features, patches)
        return patches

    # --- ImageTextModel ---------------------------------------------------------------------

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.text_vector(t) for t in texts]).astype(np.float32)

    def encode_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        vectors = []
        for image in images:
            embedding = self.segmenter.encode(image)
            patches = self.patch_embeddings(embedding)
            pooled = patches[:, valid_mask(embedding.geometry, patches.shape[-1])].mean(axis=1)
            vectors.append(pooled / max(float(np.linalg.norm(pooled)), 1e-12))
        return np.stack(vectors).astype(np.float32)

    # --- DenseGrounding ---------------------------------------------------------------------

    def logit_map(self, embedding: ImageEmbedding, text: str) -> np.ndarray:
        """(h, w) calibrated logit that each cell shows the text's target (padding included);
        an adapted concept with a feature probe adds the probe's logit."""
        patches = self.patch_embeddings(embedding)
        cosine = np.einsum("dhw,d->hw", patches, self.text_vector(text))
        logits = self.engine.scale * cosine + self.engine.bias
        probe = self.concept_probes.get(concept_key(text))
        if probe is not None:
            logits = logits + probe_logits(unit_features(embedding.features[0]), probe)
        return logits.astype(np.float32)

    def similarity_map(self, embedding: ImageEmbedding, text: str) -> np.ndarray:
        """(h, w) probability that each cell shows the text's target; 0 on padding."""
        logits = self.logit_map(embedding, text)
        probability = 1.0 / (1.0 + np.exp(-logits))
        return np.where(valid_mask(embedding.geometry, logits.shape[-1]), probability,
                        0.0).astype(np.float32)

    def presence_score(self, embedding: ImageEmbedding, text: str,
                       statistic: str | None = None) -> float:
        """The presence score of the text's target: the ``map`` statistic (``sigmoid`` of the
        mean of the top-k cell logits inside the image) or its concept's presence ``head``
        (:mod:`.presence_head`); by default the statistic calibration chose for it
        (:meth:`statistic_of`)."""
        statistic = statistic or self.statistic_of(text)
        logits = self.logit_map(embedding, text)
        valid = valid_mask(embedding.geometry, logits.shape[-1])
        if statistic == "map":
            return presence_from_logits(logits, valid, self.presence.top_k)
        head = self.presence_heads.get(concept_key(text))
        if statistic != "head" or head is None:
            raise InputError(f"no presence statistic {statistic!r} for {text!r}")
        features = embedding.features[0]
        if self._pooled_cache is None or self._pooled_cache[0] is not embedding.features:
            self._pooled_cache = (embedding.features, pooled_features(features, valid))
        return head_score(head, head_input(self._pooled_cache[1],
                                           map_features(features, logits, valid)))

    def statistic_of(self, text: str) -> str:
        """The presence statistic of the text's concept: ``head`` where calibration chose its
        presence head, else ``map``."""
        return self.presence_statistics.get(concept_key(text), "map")

    @property
    def label(self) -> str:
        """How errors name this model: its folder (the built-in model by that name)."""
        if self.source_dir is None:
            return "in memory"
        return "built-in" if self.source_dir == builtin_model_dir() else str(self.source_dir)

    def require_point(self, point: str) -> None:
        """Refuse an unknown operating point, or one this model was not calibrated for."""
        if point not in PRESENCE_POINTS:
            raise InputError(f"unknown presence operating point {point!r}; use "
                             f"{', '.join(PRESENCE_POINTS)}")
        if self.presence.at(point) is None:
            raise InputError(f"the grounding model ({self.label}) has no '{point}' presence "
                             "point (calibrated before operating points): use --presence "
                             "recall, or recalibrate it (scripts/recalibrate_presence.py)")

    def threshold_at(self, concept: str | None, point: str = "recall") -> float:
        """The "not found" threshold of ``concept`` (None: a prompt that reached no concept)
        at an operating point: the concept's calibrated one, else the model-wide one. A
        concept with its own ``recall`` threshold but no other points (adapted by
        ``clipsam adapt``) is refused at the other points."""
        key = concept or ""
        if point == "recall":
            return self.concept_thresholds.get(key, self.presence.threshold)
        self.require_point(point)
        if key in self.concept_points:
            return self.concept_points[key][point]
        if key in self.concept_thresholds:
            raise InputError(f"concept {key!r} of the grounding model ({self.label}) has no "
                             f"'{point}' presence point (only its own recall threshold, e.g. "
                             "from clipsam adapt): use --presence recall")
        return float(self.presence.at(point))

    @property
    def concept_names(self) -> list[str]:
        """Every trained and adapted concept, sorted: those with phrases, an adapted vector
        or any calibrated setting (a concept is known by its name even without phrases)."""
        return sorted({*self.concept_phrases, *self.concepts, *self.concept_thresholds,
                       *self.concept_points, *self.mask_sources, *self.map_levels,
                       *self.box_margins})

    def concept_similarities(self, text: str) -> dict[str, tuple[float, str]]:
        """Per concept, (similarity, phrase) of its phrase (its name included) nearest to the
        prompt in the sentence encoder's space."""
        phrases = {c: sorted({c, *self.concept_phrases.get(c, ())}) for c in self.concept_names}
        every = sorted({p for names in phrases.values() for p in names})
        if not every:
            return {}
        key = concept_key(text)
        vectors = self.text_encoder([key, *every])
        return nearest_phrases(vectors[0], phrases, dict(zip(every, vectors[1:], strict=True)))

    def match(self, text: str) -> ConceptMatch:
        """Where the prompt lands by its words alone (:mod:`.words`); an ambiguous prompt's
        ``concept`` is its most similar candidate until the image decides (:meth:`reach`)."""
        key = concept_key(text)
        if not key:
            raise InputError("the text prompt is empty")
        exact = key if key in self.concept_names else self._phrase_index.get(key)
        if exact is not None:
            return ConceptMatch(key, exact, 1.0, exact, key)
        return match_words(key, self.concept_similarities(key), self.word_rule,
                           self.generic_members(key))

    def generic_members(self, text: str) -> list[str]:
        """The concepts a generic word names (:func:`clipsam.io.vocabulary.generic_category`):
        those whose target has the word's SNOMED category; empty for any other prompt."""
        category = generic_category(text)
        if category is None:
            return []
        return [c for c in self.concept_names if target_category(c) == category]

    def reach(self, embedding: ImageEmbedding, text: str, point: str = "recall") -> ConceptMatch:
        """The prompt's match decided on this image, with the presence score and the threshold
        at operating ``point`` of what will be grounded. An ambiguous prompt takes the
        candidate the image supports most (presence score furthest above that concept's own
        threshold, in logits; ties: the more similar); every candidate's score is kept."""
        self.require_point(point)
        match = self.match(text)
        if match.ambiguous:
            scored = tuple(Candidate(c.concept, c.similarity, c.phrase,
                                     self.presence_score(embedding, c.concept),
                                     self.threshold_at(c.concept, point))
                           for c in match.candidates)
            best = max(scored, key=lambda c: (c.support, c.similarity))
            return replace(match, concept=best.concept, similarity=best.similarity,
                           phrase=best.phrase, candidates=scored, presence=best.presence,
                           threshold=best.threshold, point=point,
                           statistic=self.statistic_of(best.concept))
        return replace(match, presence=self.presence_score(embedding, match.text),
                       threshold=self.threshold_at(match.concept, point), point=point,
                       statistic=self.statistic_of(match.text))

    def concept_of(self, text: str) -> str | None:
        """The trained or adapted concept a prompt reaches by its words (:meth:`match`), or
        None."""
        return self.match(text).concept

    def operating_points(self, concept: str | None) -> dict[str, float]:
        """The threshold of every operating point this model has for ``concept`` (None: a
        prompt that reached no concept): ``recall`` always, the others where calibrated."""
        key = concept or ""
        has_others = self.presence.balanced is not None and (
            key in self.concept_points or key not in self.concept_thresholds)
        return {p: self.threshold_at(concept, p) for p in PRESENCE_POINTS
                if p == "recall" or has_others}

    def threshold_for(self, text: str, point: str = "recall") -> float:
        """The prompt's concept's calibrated threshold at ``point``, else the model-wide one."""
        return self.threshold_at(self.concept_of(text), point)

    def mask_source_for(self, text: str) -> str:
        """Where the final mask comes from for this prompt: ``segmenter``, ``map``, ``union``
        or ``decoder`` (box prompts through the decoder adapter)."""
        return self.mask_sources.get(self.concept_of(text) or "", "segmenter")

    def map_level_for(self, text: str) -> float | None:
        """The probability at which this prompt's concept's map is cut into a mask, when
        calibrated (None: the pipeline's default)."""
        return self.map_levels.get(self.concept_of(text) or "")

    def box_margin_for(self, text: str) -> float | None:
        """The fraction by which this prompt's concept's box prompts are grown on each side,
        when calibrated (None: the pipeline's default)."""
        return self.box_margins.get(self.concept_of(text) or "")

    def is_present(self, embedding: ImageEmbedding, text: str) -> bool:
        """Whether the concept the prompt reaches on this image (or the prompt's own target)
        is there (:meth:`reach`)."""
        return bool(self.reach(embedding, text).present)

    def region_scores(
        self, embedding: ImageEmbedding, masks: np.ndarray, texts: Sequence[str]
    ) -> np.ndarray:
        """(N,) agreement of each region with the texts' map: soft Dice between the region's
        cell coverage and the map's probabilities (averaged over ``texts``), so a region that
        covers the whole target and little else scores highest. An empty mask scores 0."""
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise InputError(f"region masks must be (N, H, W), got shape {masks.shape}")
        if not texts:
            raise InputError("region_scores needs at least one text")
        prob = np.mean([self.similarity_map(embedding, t) for t in texts], axis=0)
        grid = prob.shape[-1]
        cover = np.stack([mask_to_grid(m, embedding.geometry, grid) for m in masks])
        return agreement(cover, prob).astype(np.float32)

    # --- saving -----------------------------------------------------------------------------

    def save(self, model_dir: Path) -> Path:
        """Write ``heads.safetensors`` and ``config.json`` into ``model_dir``."""
        import torch
        from safetensors.torch import save_file

        model_dir = Path(model_dir)
        tensors = {k: v.detach().contiguous().clone() for k, v in self.heads.state_dict().items()}
        names = sorted(self.concepts)
        for index, name in enumerate(names):
            tensors[f"{CONCEPT_PREFIX}{index}"] = torch.from_numpy(self.concepts[name].copy())
            if name in self.concept_probes:
                tensors[f"{PROBE_PREFIX}{index}"] = torch.from_numpy(
                    self.concept_probes[name].copy())
        with_heads = sorted(self.presence_heads)
        for index, name in enumerate(with_heads):
            tensors[f"{PRESENCE_PREFIX}{index}"] = torch.from_numpy(
                self.presence_heads[name].copy())
        write_atomic(model_dir / HEADS_FILE, lambda p: save_file(tensors, str(p)))
        config = {
            "format": FORMAT, "version": 1, "heads": self.heads.config.to_dict(),
            "presence": asdict(self.presence), "concepts": names,
            "concept_thresholds": self.concept_thresholds,
            "concept_phrases": self.concept_phrases, "mask_sources": self.mask_sources,
            "map_levels": self.map_levels, "box_margins": self.box_margins,
            "volume": self.volume,
            "word_rule": asdict(self.word_rule), "presence_points": self.concept_points,
            "presence_heads": with_heads, "presence_statistics": self.presence_statistics,
            "metadata": self.metadata,
        }
        if with_heads:
            config["presence_head_layout"] = LAYOUT
        write_text_atomic(model_dir / CONFIG_FILE, json.dumps(config, indent=1) + "\n")
        for name in (HEADS_FILE, CONFIG_FILE):
            (model_dir / name).chmod(0o644)
        return model_dir


def save_volume_settings(model_dir: Path, volume: dict, report: dict) -> Path:
    """Record calibrated volume settings in a model folder's ``config.json``: the ``volume``
    block and, under ``metadata.calibration.volume``, the report they rest on (nothing else
    changes; the heads file is untouched)."""
    path = Path(model_dir) / CONFIG_FILE
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a {FORMAT} config")
    unknown = set(volume) - set(VOLUME_SETTINGS)
    if unknown:
        raise WeightsError(f"unknown volume setting(s) {sorted(unknown)}")
    config["volume"] = volume
    config.setdefault("metadata", {}).setdefault("calibration", {})["volume"] = report
    write_text_atomic(path, json.dumps(config, indent=1) + "\n")
    path.chmod(0o644)
    return path


def save_mask_sources(model_dir: Path, sources: dict[str, str], report: dict) -> Path:
    """Record recalibrated mask sources in a model folder's ``config.json``: the
    ``mask_sources`` block and, under ``metadata.calibration.decoder``, the report they rest on
    (nothing else changes)."""
    path = Path(model_dir) / CONFIG_FILE
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a {FORMAT} config")
    unknown = set(sources.values()) - set(MASK_SOURCES)
    if unknown:
        raise WeightsError(f"unknown mask source(s) {sorted(unknown)}")
    config["mask_sources"] = dict(sources)
    config.setdefault("metadata", {}).setdefault("calibration", {})["decoder"] = report
    write_text_atomic(path, json.dumps(config, indent=1) + "\n")
    path.chmod(0o644)
    return path


def builtin_model_dir() -> Path:
    """The folder of the grounding model shipped in the package."""
    return Path(str(resources.files("clipsam").joinpath("data/grounding")))


def load_grounding_model(
    model_dir: Path | None = None,
    segmenter: PromptableSegmenter | None = None,
    text_encoder: SentenceEncoder | None = None,
    device: str = "cpu",
    runtime: str = "torch",
    threads: int | None = None,
) -> GroundingModel:
    """Load a grounding model folder (the shipped model when ``model_dir`` is None), its heads
    run by ``runtime`` ("torch" or "onnx") on ``device`` ("cpu" or "cuda"; the sentence encoder
    stays on the CPU)."""
    from safetensors.numpy import load_file

    folder = Path(model_dir) if model_dir is not None else builtin_model_dir()
    config_path, heads_path = folder / CONFIG_FILE, folder / HEADS_FILE
    if not config_path.is_file() or not heads_path.is_file():
        raise WeightsError(f"{folder} is not a grounding model folder "
                           f"(needs {CONFIG_FILE} and {HEADS_FILE})")
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT:
        raise WeightsError(f"{config_path} is not a {FORMAT} config")
    if runtime not in ("torch", "onnx"):
        raise InputError(f"unknown grounding runtime {runtime!r}; use torch or onnx")
    tensors = load_file(str(heads_path))
    names = config.get("concepts", [])
    concepts = {name: tensors[f"{CONCEPT_PREFIX}{i}"] for i, name in enumerate(names)}
    probes = {name: tensors[f"{PROBE_PREFIX}{i}"] for i, name in enumerate(names)
              if f"{PROBE_PREFIX}{i}" in tensors}
    with_heads = config.get("presence_heads", [])
    if with_heads and config.get("presence_head_layout") != LAYOUT:
        raise WeightsError(f"{config_path}: presence heads of another input layout "
                           f"({config.get('presence_head_layout')!r}, expected {LAYOUT!r})")
    presence_heads = {name: tensors[f"{PRESENCE_PREFIX}{i}"] for i, name in enumerate(with_heads)}
    heads = engine = None
    if runtime == "torch":
        heads = load_heads(folder, config["heads"], device)
    else:
        engine = onnx_heads(heads_path, lambda: load_heads(folder, config["heads"], "cpu"),
                            scale=float(np.exp(tensors["log_scale"])),
                            bias=float(tensors["bias"]), device=device, threads=threads)
    model = GroundingModel(heads, PresenceRule(**config.get("presence", {})), concepts,
                           config.get("concept_thresholds", {}), text_encoder, segmenter,
                           config.get("metadata", {}), config.get("concept_phrases", {}),
                           config.get("mask_sources", {}), engine=engine,
                           heads_config=config["heads"], concept_probes=probes,
                           map_levels=config.get("map_levels", {}),
                           box_margins=config.get("box_margins", {}),
                           volume=config.get("volume", {}),
                           word_rule=WordRule(**config.get("word_rule", {})),
                           concept_points=config.get("presence_points", {}),
                           presence_heads=presence_heads,
                           presence_statistics=config.get("presence_statistics", {}))
    model.source_dir = folder
    if "decoder" in model.mask_sources.values() and not (folder / ADAPTER_GRAPH).is_file():
        raise WeightsError(f"{folder}: a concept's mask source is 'decoder' but the folder "
                           f"holds no {ADAPTER_GRAPH}")
    return model


def load_heads(folder: Path, heads_config: dict, device: str = "cpu") -> GroundingHeads:
    """The torch heads module of a model folder, strictly loaded, on ``device``."""
    from safetensors.torch import load_file

    from clipsam.models.grounding.heads import GroundingHeads, HeadsConfig

    heads_path = Path(folder) / HEADS_FILE
    tensors = load_file(str(heads_path))
    heads = GroundingHeads(HeadsConfig.from_dict(heads_config))
    state = {k: v for k, v in tensors.items()
             if not k.startswith((CONCEPT_PREFIX, PROBE_PREFIX, PRESENCE_PREFIX))}
    try:
        heads.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{heads_path} does not match its config.json") from exc
    return heads.to(device).eval()


def presence_from_logits(logits: np.ndarray, valid: np.ndarray, top_k: int) -> float:
    """``sigmoid(mean of the top_k largest logits among valid cells)`` of an (h, w) map."""
    values = np.asarray(logits, np.float64)[valid]
    k = min(top_k, values.size)
    mean = float(np.partition(values, -k)[-k:].mean())
    return float(1.0 / (1.0 + np.exp(-mean)))


def unit_features(features: np.ndarray) -> np.ndarray:
    """(C, h, w) encoder features scaled to unit length in every cell (what a probe reads)."""
    features = np.asarray(features, np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=0, keepdims=True), 1e-6)


def probe_logits(unit: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """(h, w) logit of a feature probe (C weights, then a bias) on (C, h, w) unit features."""
    return np.einsum("chw,c->hw", unit, probe[:-1]) + probe[-1]
