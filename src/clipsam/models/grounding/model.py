"""The built-in text-grounding model: locked towers, small trained heads, a learned "not found".

Images are read through a segmenter's :class:`ImageEmbedding` (computed once per image by the
pipeline); texts through the locked sentence encoder. A model folder holds
``heads.safetensors`` (the heads, plus concept vectors learned by ``clipsam adapt``) and
``config.json`` (sizes, the presence rule, adapted concept names).
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
from clipsam.models.grounding.grid import mask_to_grid, valid_mask
from clipsam.models.grounding.heads import GroundingHeads, HeadsConfig
from clipsam.models.grounding.text_encoder import SentenceEncoder
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter

FORMAT = "clipsam-grounding"
HEADS_FILE = "heads.safetensors"
CONFIG_FILE = "config.json"
CONCEPT_PREFIX = "concept."


@dataclass(frozen=True)
class PresenceRule:
    """Target present when the mean of the ``top_k`` highest patch probabilities >= threshold."""

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
    ) -> None:
        self.heads = heads.eval()
        self.presence = presence or PresenceRule()
        self.concepts = {concept_key(k): np.asarray(v, np.float32)
                         for k, v in (concepts or {}).items()}
        self.concept_thresholds = {concept_key(k): float(v)
                                   for k, v in (concept_thresholds or {}).items()}
        self.metadata = dict(metadata or {})
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
                self._text_cache[key] = self.heads.text(sentence)[0].numpy()
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
            patches = self.heads.patch(torch.from_numpy(np.asarray(features, np.float32)))[0]
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
            valid = torch.from_numpy(valid_mask(embedding.geometry, patches.shape[-1]))
            pooled = patches[:, valid].mean(dim=1)
            vectors.append(torch.nn.functional.normalize(pooled, dim=0).numpy())
        return np.stack(vectors).astype(np.float32)

    # --- DenseGrounding ---------------------------------------------------------------------

    def similarity_map(self, embedding: ImageEmbedding, text: str) -> np.ndarray:
        """(h, w) probability that each cell shows the text's target; 0 on padding."""
        patches = self.patch_embeddings(embedding)
        vector = torch.from_numpy(self.text_vector(text))
        with torch.inference_mode():
            logits = self.heads.logits(patches[None], vector[None])[0, 0]
            probability = torch.sigmoid(logits).numpy()
        return np.where(valid_mask(embedding.geometry, probability.shape[-1]), probability,
                        0.0).astype(np.float32)

    def presence_score(self, embedding: ImageEmbedding, text: str) -> float:
        """Mean of the top-k patch probabilities inside the image."""
        prob = self.similarity_map(embedding, text)
        values = prob[valid_mask(embedding.geometry, prob.shape[-1])]
        k = min(self.presence.top_k, values.size)
        return float(np.partition(values, -k)[-k:].mean())

    def threshold_for(self, text: str) -> float:
        return self.concept_thresholds.get(concept_key(text), self.presence.threshold)

    def is_present(self, embedding: ImageEmbedding, text: str) -> bool:
        return self.presence_score(embedding, text) >= self.threshold_for(text)

    def region_scores(
        self, embedding: ImageEmbedding, masks: np.ndarray, texts: Sequence[str]
    ) -> np.ndarray:
        """(N,) cosine of each mask's pooled patch vector to the mean prompt vector.

        An empty mask scores -1.
        """
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise InputError(f"region masks must be (N, H, W), got shape {masks.shape}")
        if not texts:
            raise InputError("region_scores needs at least one text")
        patches = self.patch_embeddings(embedding)
        grid = patches.shape[-1]
        prompt = self.encode_text(texts).mean(axis=0)
        prompt = torch.from_numpy(prompt / max(np.linalg.norm(prompt), 1e-8))
        weights = torch.from_numpy(np.stack([mask_to_grid(m, embedding.geometry, grid)
                                             for m in masks]))
        pooled = torch.einsum("nhw,dhw->nd", weights, patches)
        norms = pooled.norm(dim=1)
        scores = (pooled @ prompt) / norms.clamp_min(1e-8)
        return torch.where(norms > 1e-6, scores, torch.full_like(scores, -1.0)).numpy()

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
            "concept_thresholds": self.concept_thresholds, "metadata": self.metadata,
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
) -> GroundingModel:
    """Load a grounding model folder; the shipped model when ``model_dir`` is None."""
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
    concepts = {name: tensors[f"{CONCEPT_PREFIX}{i}"].numpy()
                for i, name in enumerate(config.get("concepts", []))}
    return GroundingModel(heads, PresenceRule(**config.get("presence", {})), concepts,
                          config.get("concept_thresholds", {}), text_encoder, segmenter,
                          config.get("metadata", {}))
