"""The one embedding store: keyed by content and segmenter, exact, shared by training and eval,
and reading the entries of its earlier one-file layout without encoding them again."""

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from clipsam.errors import InputError
from clipsam.io.image import segmenter_input
from clipsam.io.labelled_sets import list_samples
from clipsam.io.read import read_image
from clipsam.models.embedding_store import (
    EmbeddingStore,
    StoredEmbeddings,
    segmenter_identity,
    store_images,
)
from clipsam.models.segmenter import Geometry, ImageEmbedding
from conftest import BoxFillingSegmenter


class PixelSegmenter(BoxFillingSegmenter):
    """Features that depend on every pixel (so two images never share them), in float32 values
    that float16 could not hold exactly."""

    name = "pixel"

    def encode(self, image):
        self.encoded += 1
        pixels = np.asarray(image, np.float64)
        seed = int(pixels.sum() * 1000 + pixels[0].sum()) % 2**32
        features = np.random.default_rng(seed).normal(size=(1, 8, 4, 4)).astype(np.float32)
        h, w = pixels.shape[:2]
        return ImageEmbedding(features / 3, Geometry((h, w), (h, w), max(h, w)), self.name)


def make_set(root, name, seed, count=3):
    """Folder ``root/name`` with images and masks ``0.png`` ... of random pixels."""
    folder = root / name
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (12, 16), dtype=np.uint8)).save(
            folder / "images" / f"{i}.png")
        Image.fromarray(np.zeros((12, 16), np.uint8)).save(folder / "masks" / f"{i}.png")
    return folder


def paths(folder):
    return [s.image_path for s in list_samples(folder)]


def test_same_set_name_and_ids_with_other_pixels_are_other_entries(tmp_path):
    store = EmbeddingStore(tmp_path / "store", "pixel|weights-a")
    segmenter = PixelSegmenter()
    first = make_set(tmp_path / "site1", "lungs", seed=1)
    second = make_set(tmp_path / "site2", "lungs", seed=2)  # same folder name, same ids
    keys_first = store_images(paths(first), store, segmenter)
    keys_second = store_images(paths(second), store, segmenter)
    assert segmenter.encoded == 6 and not set(keys_first) & set(keys_second)
    for path, key in zip(paths(second), keys_second, strict=True):
        fresh = PixelSegmenter().encode(segmenter_input(read_image(path)))
        stored = store.load(key)
        assert stored.features.dtype == np.float32
        np.testing.assert_array_equal(stored.features, fresh.features)  # exact, its own
        assert stored.geometry == fresh.geometry and stored.model_name == "pixel"
    # read again: nothing is encoded
    assert store_images(paths(first) + paths(second), store, segmenter) == keys_first + keys_second
    assert segmenter.encoded == 6


def test_an_identical_image_in_two_sets_is_encoded_once(tmp_path):
    store = EmbeddingStore(tmp_path / "store", "pixel|weights-a")
    lungs = make_set(tmp_path, "lungs", seed=3)
    heart = tmp_path / "heart"
    shutil.copytree(lungs, heart)  # the same scans labelled for another target
    for path in [*(heart / "images").iterdir(), *(heart / "masks").iterdir()]:
        path.rename(path.with_name(f"h{path.name}"))
    segmenter = PixelSegmenter()
    keys = store_images(paths(lungs) + paths(heart), store, segmenter)
    assert keys[:3] == keys[3:] and segmenter.encoded == 3
    assert len(list(store.folder.glob("*.npy"))) == 3


def test_another_segmenter_identity_misses(tmp_path):
    folder = make_set(tmp_path, "lungs", seed=4)
    store = EmbeddingStore(tmp_path / "store", "pixel|weights-a")
    store_images(paths(folder), store, PixelSegmenter())
    other = EmbeddingStore(tmp_path / "store", "pixel|weights-b")  # same folder, other weights
    image = segmenter_input(read_image(paths(folder)[0]))
    assert store.key(image) in store and other.key(image) not in other
    with pytest.raises(InputError, match="no embedding"):
        store_images(paths(folder), other)  # without a segmenter, a miss is an error
    segmenter = PixelSegmenter()
    store_images(paths(folder), other, segmenter)
    assert segmenter.encoded == 3
    # a wrapped segmenter of another identity cannot fill this store
    with pytest.raises(ValueError, match="another segmenter"):
        store_images(paths(folder), store, StoredEmbeddings(PixelSegmenter(), other))


def test_the_identity_and_keys_are_those_of_entries_already_on_disk(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    segmenter = PixelSegmenter()
    assert segmenter_identity(segmenter, weights) == (
        f"{segmenter!r}|{hashlib.sha256(b'weights').hexdigest()}")
    # the key the store gave before training shared it (clipsam 2026-12-06, LiteMedSAM in ONNX
    # Runtime): entries filled by earlier `clipsam eval --embedding-cache` runs are found
    identity = ("SamSegmenter(name='litemedsam', runtime='onnx', preprocess=r2)|79d8c9dca6db4d"
                "69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76")
    key = EmbeddingStore(tmp_path, identity).key(np.arange(12, dtype=np.float32).reshape(3, 4))
    assert key == "b2693e74d9985e48bf11cf910448555816b4552e"


def test_eval_and_training_share_entries_and_training_memory_maps_them(tmp_path):
    folder = make_set(tmp_path, "lungs", seed=5)
    store = EmbeddingStore(tmp_path / "store", "pixel|weights-a")
    wrapped = StoredEmbeddings(PixelSegmenter(), store)
    images = [segmenter_input(read_image(p)) for p in paths(folder)]
    made = [wrapped.encode(image) for image in images]  # what eval and segment do
    assert (wrapped.hits, wrapped.misses) == (0, 3)
    again = [wrapped.encode(image) for image in images]
    assert (wrapped.hits, wrapped.misses) == (3, 3)
    for a, b in zip(made, again, strict=True):
        np.testing.assert_array_equal(a.features, b.features)
    keys = store_images(paths(folder), store)  # what training does: no segmenter needed
    mapped = store.load(keys[0], mmap=True)
    assert isinstance(mapped.features, np.memmap) and mapped.features.dtype == np.float32
    np.testing.assert_array_equal(mapped.features, made[0].features)
    features, meta = store.paths(keys[0])
    assert (features.name, meta.name) == (f"{keys[0]}.npy", f"{keys[0]}.json")
    assert json.loads(meta.read_text()) == {"original_size": [12, 16], "resized_size": [12, 16],
                                            "input_size": 16, "model_name": "pixel"}


def test_an_entry_of_the_one_file_layout_is_rewritten_not_encoded(tmp_path):
    folder = make_set(tmp_path, "lungs", seed=6, count=1)
    store = EmbeddingStore(tmp_path / "store", "pixel|weights-a")
    image = segmenter_input(read_image(paths(folder)[0]))
    embedding = PixelSegmenter().encode(image)
    key = store.key(image)
    # the earlier layout: <key>.npz with the float32 features and a json "meta" string
    meta = json.dumps({"original_size": [12, 16], "resized_size": [12, 16], "input_size": 16,
                       "model_name": "pixel"})
    store.folder.mkdir()
    np.savez(store.folder / f"{key}.npz", features=embedding.features, meta=np.array(meta))
    segmenter = PixelSegmenter()
    assert store_images(paths(folder), store, segmenter) == [key]
    assert segmenter.encoded == 0 and not (store.folder / f"{key}.npz").exists()
    assert store.paths(key)[1].read_text() == meta
    loaded = store.load(key, mmap=True)
    np.testing.assert_array_equal(loaded.features, embedding.features)
    assert loaded.geometry == embedding.geometry and loaded.model_name == "pixel"
