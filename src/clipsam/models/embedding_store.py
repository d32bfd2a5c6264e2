"""The one folder of image embeddings kept across runs, shared by segmentation, evaluation and
training (``--embedding-cache DIR`` on every command that encodes images).

An entry is keyed by a hash of the segmenter's input pixels (shape, dtype and bytes) and of the
segmenter's identity (:func:`segmenter_identity`: name, runtime, preprocessing revision and the
weight file's SHA-256). The same image under any set, folder or file name is one entry, encoded
once; another image under the same name, or the same image seen by another segmenter, is another
entry. Layout of the folder::

    <key>.npy    float32 (1, C, h, w) features, exactly what the encoder returned (``np.save``;
                 training memory-maps them)
    <key>.json   {"original_size": [H, W], "resized_size": [h, w], "input_size": S,
                  "model_name": NAME}

``<key>`` is 40 hex digits (BLAKE2b, 20 bytes). Both files are written atomically, features
first, so an entry exists once its ``.json`` does. An entry of the earlier one-file layout,
``<key>.npz`` (arrays ``features`` and ``meta``, the same key), is rewritten in this layout the
first time it is looked up, and the ``.npz`` removed: nothing is encoded again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipsam.errors import InputError
from clipsam.io.atomic import write_atomic, write_text_atomic
from clipsam.models.segmenter import Geometry, ImageEmbedding, MaskPrediction, PromptableSegmenter


def segmenter_identity(segmenter: PromptableSegmenter, checkpoint: Path) -> str:
    """What a segmenter's embeddings depend on: its repr (name, runtime, preprocessing
    revision) and the SHA-256 of its weight file."""
    from clipsam.models.weights import sha256_of

    return f"{segmenter!r}|{sha256_of(checkpoint)}"


class EmbeddingStore:
    """The entries of one segmenter (``identity``, from :func:`segmenter_identity`) in
    ``folder`` (which may hold other segmenters' entries too)."""

    def __init__(self, folder: Path, identity: str) -> None:
        self.folder = Path(folder)
        self.identity = identity

    def key(self, image: np.ndarray) -> str:
        """The entry name of the (H, W[, 3]) array the segmenter is given."""
        array = np.ascontiguousarray(image)
        digest = hashlib.blake2b(digest_size=20)
        digest.update(f"{self.identity}|{array.shape}|{array.dtype}|".encode())
        digest.update(array.tobytes())
        return digest.hexdigest()

    def paths(self, key: str) -> tuple[Path, Path]:
        """The (features, geometry) files of an entry."""
        return self.folder / f"{key}.npy", self.folder / f"{key}.json"

    def __contains__(self, key: str) -> bool:
        return self.paths(key)[1].is_file() or self._from_npz(key)

    def load(self, key: str, mmap: bool = False) -> ImageEmbedding:
        """An entry as (1, C, h, w) float32 features (memory-mapped, read-only, with ``mmap``)
        and its geometry."""
        if key not in self:
            raise InputError(f"no stored embedding {key} in {self.folder}")
        features_path, meta_path = self.paths(key)
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        geometry = Geometry(tuple(meta["original_size"]), tuple(meta["resized_size"]),
                            int(meta["input_size"]))
        features = np.load(features_path, mmap_mode="r" if mmap else None)
        return ImageEmbedding(features, geometry, meta["model_name"])

    def save(self, key: str, embedding: ImageEmbedding) -> None:
        features_path, meta_path = self.paths(key)
        features = np.asarray(embedding.features, np.float32)
        g = embedding.geometry
        write_atomic(features_path, lambda p: np.save(p, features))
        write_text_atomic(meta_path, json.dumps({
            "original_size": list(g.original_size), "resized_size": list(g.resized_size),
            "input_size": g.input_size, "model_name": embedding.model_name}))

    def _from_npz(self, key: str) -> bool:
        """Rewrite the one-file entry ``<key>.npz`` in this layout (its features as they are,
        its ``meta`` as the ``.json``) and remove it; False when there is none."""
        legacy = self.folder / f"{key}.npz"
        try:
            with np.load(legacy) as stored:
                features, meta = stored["features"], str(stored["meta"])
        except FileNotFoundError:
            return False
        features_path, meta_path = self.paths(key)
        write_atomic(features_path, lambda p: np.save(p, np.asarray(features, np.float32)))
        write_text_atomic(meta_path, meta)
        legacy.unlink(missing_ok=True)
        return True


class StoredEmbeddings:
    """A :class:`PromptableSegmenter` whose encodings are kept in ``store``; everything else is
    the wrapped segmenter's."""

    def __init__(self, segmenter: PromptableSegmenter, store: EmbeddingStore) -> None:
        self.inner = segmenter
        self.store = store
        self.name = segmenter.name
        self.supports_points = segmenter.supports_points
        self.hits = 0
        self.misses = 0

    def __getattr__(self, attribute: str):
        return getattr(self.inner, attribute)

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        key = self.store.key(image)
        if key in self.store:
            self.hits += 1
            return self.store.load(key)
        embedding = self.inner.encode(image)
        self.store.save(key, embedding)
        self.misses += 1
        return embedding

    def predict(self, embedding: ImageEmbedding, boxes: np.ndarray | None = None,
                points: np.ndarray | None = None,
                point_labels: np.ndarray | None = None) -> MaskPrediction:
        return self.inner.predict(embedding, boxes=boxes, points=points,
                                  point_labels=point_labels)


def store_images(paths: Sequence[Path], store: EmbeddingStore,
                 segmenter: PromptableSegmenter | None = None, progress: bool = False) -> list[str]:
    """The key of each image file in ``store`` (each file read once, as a segmenter is given
    it). An image not stored yet is encoded by ``segmenter`` and stored, once however many
    files hold it; without a segmenter it is an InputError."""
    from tqdm import tqdm

    from clipsam.io.image import segmenter_input
    from clipsam.io.read import read_image

    encoder = segmenter
    if isinstance(segmenter, StoredEmbeddings):
        if segmenter.store.identity != store.identity:
            raise ValueError("the segmenter's embedding store is another segmenter's")
        encoder = segmenter.inner
    keys = []
    for path in tqdm(paths, desc="embeddings", disable=not progress or not paths):
        image = segmenter_input(read_image(path))
        key = store.key(image)
        if key not in store:
            if encoder is None:
                raise InputError(f"{path} has no embedding in {store.folder} and no segmenter "
                                 "was given to encode it")
            store.save(key, encoder.encode(image))
        keys.append(key)
    return keys
