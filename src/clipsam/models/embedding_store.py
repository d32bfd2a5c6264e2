"""A folder of image embeddings kept across runs, so a second method or model on the same images
costs only what comes after the encoder.

:class:`StoredEmbeddings` wraps a segmenter: ``encode`` looks the image up by a hash of its
pixels and of the segmenter's identity (name, runtime and weight-file hashes), and encodes and
stores it only when missing. Entries are float32, exactly what the encoder returned, written
atomically; everything else is the wrapped segmenter's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from clipsam.io.atomic import write_atomic
from clipsam.models.segmenter import Geometry, ImageEmbedding, MaskPrediction, PromptableSegmenter


class StoredEmbeddings:
    """A :class:`PromptableSegmenter` whose encodings are kept in ``folder``."""

    def __init__(self, segmenter: PromptableSegmenter, folder: Path, identity: str) -> None:
        self.inner = segmenter
        self.folder = Path(folder)
        self.identity = identity
        self.name = segmenter.name
        self.supports_points = segmenter.supports_points
        self.hits = 0
        self.misses = 0

    def __getattr__(self, attribute: str):
        return getattr(self.inner, attribute)

    def key(self, image: np.ndarray) -> str:
        array = np.ascontiguousarray(image)
        digest = hashlib.blake2b(digest_size=20)
        digest.update(f"{self.identity}|{array.shape}|{array.dtype}|".encode())
        digest.update(array.tobytes())
        return digest.hexdigest()

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        path = self.folder / f"{self.key(image)}.npz"
        if path.is_file():
            with np.load(path) as stored:
                meta = json.loads(str(stored["meta"]))
                geometry = Geometry(tuple(meta["original_size"]), tuple(meta["resized_size"]),
                                    int(meta["input_size"]))
                self.hits += 1
                return ImageEmbedding(stored["features"], geometry, meta["model_name"])
        embedding = self.inner.encode(image)
        g = embedding.geometry
        meta = json.dumps({"original_size": list(g.original_size),
                           "resized_size": list(g.resized_size), "input_size": g.input_size,
                           "model_name": embedding.model_name})
        features = np.asarray(embedding.features, np.float32)
        write_atomic(path, lambda p: np.savez(p, features=features, meta=np.array(meta)))
        self.misses += 1
        return embedding

    def predict(self, embedding: ImageEmbedding, boxes: np.ndarray | None = None,
                points: np.ndarray | None = None,
                point_labels: np.ndarray | None = None) -> MaskPrediction:
        return self.inner.predict(embedding, boxes=boxes, points=points,
                                  point_labels=point_labels)
