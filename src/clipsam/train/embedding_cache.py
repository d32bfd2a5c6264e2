"""The cache of segmenter image embeddings that region training reads.

Each labelled image is encoded once and cached as float16 ``<cache>/<set>/<id>.npy`` (the
(C, h, w) features) with its geometry and model name in ``<id>.json``; both files are written
atomically, so an interrupted run leaves no half entry.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clipsam.errors import InputError
from clipsam.io.atomic import write_atomic, write_text_atomic
from clipsam.io.labelled_sets import Sample
from clipsam.models.segmenter import Geometry, ImageEmbedding, PromptableSegmenter


def cache_paths(cache_dir: Path, sample: Sample) -> tuple[Path, Path]:
    """The (features, geometry) files of a sample's cached embedding."""
    folder = Path(cache_dir) / sample.set_name
    return folder / f"{sample.image_id}.npy", folder / f"{sample.image_id}.json"


def save_embedding(cache_dir: Path, sample: Sample, embedding: ImageEmbedding) -> None:
    """Store one embedding as float16 features plus its geometry (both written atomically)."""
    features_path, geometry_path = cache_paths(cache_dir, sample)
    g = embedding.geometry
    write_text_atomic(geometry_path, json.dumps({
        "original_size": list(g.original_size), "resized_size": list(g.resized_size),
        "input_size": g.input_size, "model_name": embedding.model_name}))
    features = np.asarray(embedding.features[0], dtype=np.float16)
    write_atomic(features_path, lambda p: np.save(p, features))


def is_cached(cache_dir: Path, sample: Sample) -> bool:
    return all(p.is_file() for p in cache_paths(cache_dir, sample))


def load_geometry(cache_dir: Path, sample: Sample) -> Geometry:
    """The geometry stored beside a cached embedding."""
    _, geometry_path = cache_paths(cache_dir, sample)
    if not geometry_path.is_file():
        raise InputError(f"no cached embedding for {sample.set_name}/{sample.image_id}: "
                         f"run scripts/cache_embeddings.py")
    meta = json.loads(geometry_path.read_text())
    return Geometry(tuple(meta["original_size"]), tuple(meta["resized_size"]),
                    int(meta["input_size"]))


def cached_model_name(cache_dir: Path, sample: Sample) -> str:
    """The name of the segmenter that made a cached embedding."""
    _, geometry_path = cache_paths(cache_dir, sample)
    return json.loads(geometry_path.read_text()).get("model_name", "")


def load_embedding(cache_dir: Path, sample: Sample) -> ImageEmbedding:
    """A cached embedding as float32 (1, C, h, w) features with its geometry."""
    geometry = load_geometry(cache_dir, sample)
    features_path, _ = cache_paths(cache_dir, sample)
    return ImageEmbedding(np.load(features_path).astype(np.float32)[None], geometry,
                          cached_model_name(cache_dir, sample))


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def encode_missing(samples: Sequence[Sample], cache_dir: Path, segmenter: PromptableSegmenter,
                   progress: bool = True) -> int:
    """Encode and cache every sample not cached yet; returns how many were encoded.

    An image file identical (byte for byte) to one already cached in this run or among
    ``samples`` (two sets labelling the same scans, e.g. heart and clavicles on JSRT) is not
    encoded again: its cache entry is a copy of the other's.
    """
    from tqdm import tqdm

    from clipsam.io.image import segmenter_input
    from clipsam.io.read import read_image

    done = {_file_digest(s.image_path): s for s in samples if is_cached(cache_dir, s)}
    todo = [s for s in samples if not is_cached(cache_dir, s)]
    encoded = 0
    for sample in tqdm(todo, desc="encoding images", disable=not progress or not todo):
        digest = _file_digest(sample.image_path)
        twin = done.get(digest)
        if twin is not None:
            for source, target in zip(cache_paths(cache_dir, twin), cache_paths(cache_dir, sample),
                                      strict=True):
                write_atomic(target, lambda p, src=source: shutil.copyfile(src, p))
        else:
            image = segmenter_input(read_image(sample.image_path))
            save_embedding(cache_dir, sample, segmenter.encode(image))
            encoded += 1
        done[digest] = sample
    return encoded
