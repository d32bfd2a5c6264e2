"""Synthetic region data for the grounding model's training, calibration and adaptation tests.

Every concept's target cells carry a fixed feature direction on top of noise, so tiny heads
learn to ground and to tell present from absent within a few epochs. Images are 64 x 64 pixels
on a 16 x 16 grid of 16-dim features (4 pixels a cell); targets are cell-aligned squares.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from clipsam.io.labelled_sets import Sample
from clipsam.models.embedding_store import EmbeddingStore, store_images
from clipsam.models.grounding import HeadsConfig
from clipsam.models.segmenter import Geometry, ImageEmbedding
from clipsam.train.captions import Concept
from clipsam.train.region_data import RegionData, build_region_data
from conftest import BoxFillingSegmenter

FEATURES, GRID, SIZE = 16, 16, 64
SMALL = HeadsConfig(feature_dim=FEATURES, text_dim=24, hidden_dim=16, embed_dim=8,
                    dilations=(1, 2))
GEOMETRY = Geometry((SIZE, SIZE), (SIZE, SIZE), SIZE)
NAMES = ("alpha thing", "beta thing", "gamma thing")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: one torch thread is faster than two fighting over a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def direction(index: int) -> np.ndarray:
    """The feature direction of concept ``index`` (orthogonal-ish, strong)."""
    return np.random.default_rng(100 + index).normal(size=FEATURES).astype(np.float32) * 2


def features_with(target: np.ndarray, index: int | None, rng: np.random.Generator) -> np.ndarray:
    """(F, grid, grid) noise, plus concept ``index``'s direction on the target cells."""
    f = rng.normal(size=(FEATURES, GRID, GRID)).astype(np.float32)
    if index is not None:
        f += target[None] * direction(index)[:, None, None]
    return f


def square_target(rng: np.random.Generator, side: int = 5) -> np.ndarray:
    t = np.zeros((GRID, GRID), np.float32)
    y, x = rng.integers(0, GRID - side, size=2)
    t[y:y + side, x:x + side] = 1
    return t


def grid_to_pixels(cells: np.ndarray) -> np.ndarray:
    """A (grid, grid) cell mask as the (64, 64) bool pixel mask it came from."""
    return np.kron(cells > 0.5, np.ones((SIZE // GRID, SIZE // GRID), bool))


def embedding(features: np.ndarray) -> ImageEmbedding:
    return ImageEmbedding(np.asarray(features, np.float32)[None], GEOMETRY, "synthetic")


def concepts(count: int = 2, may_show: dict[int, Sequence[int]] | None = None):
    """``count`` concepts; set ``s{i}`` is concept ``NAMES[i]``."""
    may_show = may_show or {}
    return tuple(Concept(target=NAMES[i], phrases=(NAMES[i],),
                         may_show=tuple(f"s{j}" for j in may_show.get(i, ())))
                 for i in range(count))


def region_data(seed: int = 0, n: int = 24, count: int = 2, empty_every: int = 4,
                unknown: np.ndarray | None = None, subject_prefix: str = "p") -> RegionData:
    """``n`` images, image i of concept ``i % count``; every ``empty_every``-th image of each
    concept has no target."""
    rng = np.random.default_rng(seed)
    features, targets, index, samples = [], [], [], []
    for i in range(n):
        c = i % count
        empty = empty_every and (i // count) % empty_every == empty_every - 1
        t = np.zeros((GRID, GRID), np.float32) if empty else square_target(rng)
        features.append(features_with(t, c, rng).astype(np.float16))
        targets.append(t)
        index.append(c)
        samples.append(Sample(f"s{c}", f"img{i}", f"{subject_prefix}{i}", Path(f"{i}.png"),
                              Path(f"{i}.png")))
    if unknown is None:
        unknown = np.zeros((n, count), bool)
    return RegionData(features, np.stack(targets), np.ones((n, GRID, GRID), bool),
                      np.asarray(index), unknown, np.zeros_like(unknown), concepts(count),
                      tuple(samples),
                      (GEOMETRY,) * n, "synthetic")


def synthetic_store(folder: Path) -> EmbeddingStore:
    """The embedding store in ``folder`` that :func:`write_labelled_set` fills."""
    return EmbeddingStore(folder, "synthetic-features")


def stored_region_data(samples: Sequence[Sample], folder: Path, concepts: dict[str, Concept],
                       captions: Sequence[str] | None = None) -> RegionData:
    """Region data of ``samples`` from their stored embeddings in ``folder``."""
    store = synthetic_store(folder)
    keys = store_images([s.image_path for s in samples], store)
    return build_region_data(samples, keys, store, concepts, captions)


def write_labelled_set(root: Path, set_name: str, concept: int, subjects: Sequence[str],
                       store_dir: Path, seed: int = 0, empty: Sequence[int] = ()) -> Path:
    """A set folder ``root/set_name`` (images/, masks/, meta.csv with subjects; image i of
    subject ``subjects[i]``) and the embeddings of its images in :func:`synthetic_store`
    (``store_dir``). Images listed in ``empty`` have no target."""
    from PIL import Image

    from clipsam.io.image import segmenter_input
    from clipsam.io.labelled_sets import list_samples
    from clipsam.io.read import read_image

    folder = Path(root) / set_name
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(seed)
    targets = []
    for i in range(len(subjects)):
        t = np.zeros((GRID, GRID), np.float32) if i in empty else square_target(rng)
        mask = grid_to_pixels(t)
        image = np.where(mask, 200, 30).astype(np.uint8) + rng.integers(0, 20, mask.shape,
                                                                        dtype=np.uint8)
        name = f"{set_name}_{i:02d}.png"
        Image.fromarray(image).save(folder / "images" / name)
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / name)
        targets.append(t)
    rows = "\n".join(f"{set_name}_{i:02d},{s}" for i, s in enumerate(subjects))
    (folder / "meta.csv").write_text(f"id,subject\n{rows}\n")
    store = synthetic_store(store_dir)
    for sample, t in zip(list_samples(folder), targets, strict=True):
        key = store.key(segmenter_input(read_image(sample.image_path)))
        store.save(key, embedding(features_with(t, concept, rng)))
    return folder


class DirectionGrounding:
    """Dense grounding that reads the synthetic features exactly: a cell shows ``NAMES[c]``
    when its features point along ``direction(c)``. Implements DenseGrounding."""

    name = "direction-grounding"

    def __init__(self, present: bool = True) -> None:
        self.present = present

    def encode_text(self, texts):
        return np.ones((len(texts), 2), np.float32) / np.sqrt(2)

    def encode_images(self, images):
        return np.ones((len(images), 2), np.float32) / np.sqrt(2)

    def similarity_map(self, embedding: ImageEmbedding, text: str) -> np.ndarray:
        d = direction(NAMES.index(text))
        along = np.einsum("chw,c->hw", embedding.features[0], d / (d @ d))
        return np.where(along > 0.5, 0.95, 0.05).astype(np.float32)

    def region_scores(self, embedding, masks, texts):
        raise NotImplementedError

    def is_present(self, embedding: ImageEmbedding, text: str) -> bool:
        return self.present and bool((self.similarity_map(embedding, text) > 0.5).any())


class ShiftingSegmenter(BoxFillingSegmenter):
    """A poor segmenter: each box's rectangle, moved 6 pixels right."""

    def predict(self, embedding, boxes=None, points=None, point_labels=None):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4) + np.array([6, 0, 6, 0])
        return super().predict(embedding, boxes=boxes)


class ImageSegmenter(BoxFillingSegmenter):
    """Encodes a 64 x 64 image into synthetic features: its bright cells (the targets drawn by
    :func:`write_labelled_set`) carry concept ``concept``'s direction. Decodes like
    BoxFillingSegmenter."""

    name = "synthetic"

    def __init__(self, concept: int) -> None:
        super().__init__()
        self.concept = concept

    def encode(self, image):
        self.encoded += 1
        gray = np.asarray(image, np.float32)
        gray = gray.mean(axis=-1) if gray.ndim == 3 else gray
        if gray.max() <= 1:
            gray = gray * 255
        cells = gray.reshape(GRID, SIZE // GRID, GRID, SIZE // GRID).mean(axis=(1, 3)) > 100
        rng = np.random.default_rng(int(gray.sum()) % 2**32)
        return embedding(features_with(cells.astype(np.float32), self.concept, rng))
