"""The built-in text-grounding model: locked towers, small trained heads, a learned "not found".

Images are read through a segmenter's :class:`ImageEmbedding` (computed once per image by the
pipeline); texts through the locked sentence encoder. A model folder holds
``heads.safetensors`` (the heads, plus concept vectors learned by ``clipsam adapt``) and
``config.json`` (sizes, the presence rule, the calibrated per-concept thresholds and mask
sources, the phrases that name each trained concept, adapted concept names, and metadata on
how it was trained: data, subjects, calibration).

A prompt is matched to a trained or adapted concept by its words (:func:`concept_key`); a
matched prompt uses that concept's calibrated "not found" threshold and mask source, any other
prompt the model-wide threshold and the segmenter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from clipsam.errors import InputError, WeightsError
from clipsam.io.atomic import write_atomic, write_text_atomic
from clipsam.models.device import module_device
from clipsam.models.grounding.grid import agreement, mask_to_grid, valid_mask
from clipsam.models.grounding.heads import GroundingHeads, HeadsConfig
from clipsam.models.grounding.text_encoder import SentenceEncoder
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter

FORMAT = "clipsam-grounding"
HEADS_FILE = "heads.safetensors"
CONFIG_FILE = "config.json"
CONCEPT_PREFIX = "concept."


MASK_SOURCES = ("segmenter", "map", "union")


@dataclass(frozen=True)
class PresenceRule:
    """Target present when ``sigmoid(mean of the top_k highest cell logits)`` >= threshold."""

    top_k: int = 4
    threshold: float = 0.5


def concept_key(text: str) -> str:
    """How prompts are matched to adapted concepts: lower case, single spaces."""
    return " ".join(text.lower().split())


class GroundingModel:
    """Grounds free text on a segmenter embedding (implements ImageTextModel, DenseGrounding)."""

    name = "clipsam-grounding"

    def __init__(
        self,
        heads: GroundingHeads,
        presence: PresenceRule | None = None,
        concepts: dict[str, np.ndarray] | None = None,
        concept_thresholds: dict[str, float] | None = None,
        text_encoder: SentenceEncoder | None = None,
        segmenter: PromptableSegmenter | None = None,
        metadata: dict | None = None,
        concept_phrases: dict[str, Sequence[str]] | None = None,
        mask_sources: dict[str, str] | None = None,
    ) -> None:
        self.heads = heads.eval()
        self.device = module_device(self.heads)
        self.presence = presence or PresenceRule()
        self.concepts = {concept_key(k): np.asarray(v, np.float32)
                         for k, v in (concepts or {}).items()}
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
        self.source_dir: Path | None = None  # the folder it was loaded from, if any
        self._text_encoder = text_encoder
        self._segmenter = segmenter
        self._text_cache: dict[str, np.ndarray] = {}
        self._patch_cache: tuple[np.ndarray, torch.Tensor] | None = None

    # --- towers -----------------------------------------------------------------------------

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
            sentence = torch.from_numpy(self.text_encoder([key]))
            with torch.inference_mode():
                self._text_cache[key] = self.heads.text(sentence.to(self.device))[0].cpu().numpy()
        return self._text_cache[key]

    def patch_embeddings(self, embedding: ImageEmbedding) -> torch.Tensor:
        """(D, h, w) unit patch vectors; the last image's are cached."""
        features = embedding.features
        if self._patch_cache is not None and self._patch_cache[0] is features:
            return self._patch_cache[1]
        if features.ndim != 4 or features.shape[1] != self.heads.config.feature_dim:
            raise InputError(f"grounding needs (1, {self.heads.config.feature_dim}, h, w) "
                             f"features, got {tuple(features.shape)}")
        with torch.inference_mode():
            patches = self.heads.patch(
                torch.from_numpy(np.asarray(features, np.float32)).to(self.device))[0]
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
            valid = torch.from_numpy(valid_mask(embedding.geometry, patches.shape[-1])).to(
                self.device)
            pooled = patches[:, valid].mean(dim=1)
            vectors.append(torch.nn.functional.normalize(pooled, dim=0).cpu().numpy())
        return np.stack(vectors).astype(np.float32)

    # --- DenseGrounding ---------------------------------------------------------------------

    def logit_map(self, embedding: ImageEmbedding, text: str) -> np.ndarray:
        """(h, w) calibrated logit that each cell shows the text's target (padding included)."""
        patches = self.patch_embeddings(embedding)
        vector = torch.from_numpy(self.text_vector(text)).to(self.device)
        with torch.inference_mode():
            return self.heads.logits(patches[None], vector[None])[0, 0].cpu().numpy()

    def similarity_map(self, embedding: ImageEmbedding, text: str) -> np.ndarray:
        """(h, w) probability that each cell shows the text's target; 0 on padding."""
        logits = self.logit_map(embedding, text)
        probability = 1.0 / (1.0 + np.exp(-logits))
        return np.where(valid_mask(embedding.geometry, logits.shape[-1]), probability,
                        0.0).astype(np.float32)

    def presence_score(self, embedding: ImageEmbedding, text: str) -> float:
        """``sigmoid`` of the mean of the top-k cell logits inside the image."""
        logits = self.logit_map(embedding, text)
        return presence_from_logits(logits, valid_mask(embedding.geometry, logits.shape[-1]),
                                    self.presence.top_k)

    def concept_of(self, text: str) -> str | None:
        """The adapted or trained concept a prompt names (by its words), or None. A concept
        with its own threshold or mask source is known by its name even without phrases."""
        key = concept_key(text)
        if (key in self.concepts or key in self.concept_phrases
                or key in self.concept_thresholds or key in self.mask_sources):
            return key
        return self._phrase_index.get(key)

    def threshold_for(self, text: str) -> float:
        """The prompt's concept's calibrated threshold, else the model-wide one."""
        concept = self.concept_of(text)
        return self.concept_thresholds.get(concept or "", self.presence.threshold)

    def mask_source_for(self, text: str) -> str:
        """Where the final mask comes from for this prompt: ``segmenter``, ``map`` or ``union``."""
        return self.mask_sources.get(self.concept_of(text) or "", "segmenter")

    def is_present(self, embedding: ImageEmbedding, text: str) -> bool:
        return self.presence_score(embedding, text) >= self.threshold_for(text)

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
        model_dir = Path(model_dir)
        tensors = {k: v.detach().contiguous().clone() for k, v in self.heads.state_dict().items()}
        names = sorted(self.concepts)
        for index, name in enumerate(names):
            tensors[f"{CONCEPT_PREFIX}{index}"] = torch.from_numpy(self.concepts[name].copy())
        write_atomic(model_dir / HEADS_FILE, lambda p: save_file(tensors, str(p)))
        config = {
            "format": FORMAT, "version": 1, "heads": self.heads.config.to_dict(),
            "presence": asdict(self.presence), "concepts": names,
            "concept_thresholds": self.concept_thresholds,
            "concept_phrases": self.concept_phrases, "mask_sources": self.mask_sources,
            "metadata": self.metadata,
        }
        write_text_atomic(model_dir / CONFIG_FILE, json.dumps(config, indent=1) + "\n")
        for name in (HEADS_FILE, CONFIG_FILE):
            (model_dir / name).chmod(0o644)
        return model_dir


def builtin_model_dir() -> Path:
    """The folder of the grounding model shipped in the package."""
    return Path(str(resources.files("clipsam").joinpath("data/grounding")))


def load_grounding_model(
    model_dir: Path | None = None,
    segmenter: PromptableSegmenter | None = None,
    text_encoder: SentenceEncoder | None = None,
    device: str = "cpu",
) -> GroundingModel:
    """Load a grounding model folder (the shipped model when ``model_dir`` is None), with its
    heads on ``device`` ("cpu" or "cuda"; the sentence encoder stays on the CPU)."""
    folder = Path(model_dir) if model_dir is not None else builtin_model_dir()
    config_path, heads_path = folder / CONFIG_FILE, folder / HEADS_FILE
    if not config_path.is_file() or not heads_path.is_file():
        raise WeightsError(f"{folder} is not a grounding model folder "
                           f"(needs {CONFIG_FILE} and {HEADS_FILE})")
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT:
        raise WeightsError(f"{config_path} is not a {FORMAT} config")
    tensors = load_file(str(heads_path))
    heads = GroundingHeads(HeadsConfig.from_dict(config["heads"]))
    state = {k: v for k, v in tensors.items() if not k.startswith(CONCEPT_PREFIX)}
    try:
        heads.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{heads_path} does not match its config.json") from exc
    heads.to(device)
    concepts = {name: tensors[f"{CONCEPT_PREFIX}{i}"].numpy()
                for i, name in enumerate(config.get("concepts", []))}
    model = GroundingModel(heads, PresenceRule(**config.get("presence", {})), concepts,
                           config.get("concept_thresholds", {}), text_encoder, segmenter,
                           config.get("metadata", {}), config.get("concept_phrases", {}),
                           config.get("mask_sources", {}))
    model.source_dir = folder
    return model


def presence_from_logits(logits: np.ndarray, valid: np.ndarray, top_k: int) -> float:
    """``sigmoid(mean of the top_k largest logits among valid cells)`` of an (h, w) map."""
    values = np.asarray(logits, np.float64)[valid]
    k = min(top_k, values.size)
    mean = float(np.partition(values, -k)[-k:].mean())
    return float(1.0 / (1.0 + np.exp(-mean)))
