"""Re-encoded augmented training views: aligned crops, reproducible files, used by fit."""

import json
from dataclasses import replace

import numpy as np
import pytest

from clipsam.errors import InputError
from clipsam.io.labelled_sets import list_samples
from clipsam.io.masks import read_mask
from clipsam.io.read import read_image
from clipsam.io.splits import calibration_of
from clipsam.models.embedding_store import store_images
from clipsam.models.segmenter import Geometry, ImageEmbedding
from clipsam.train.fit import VIEWS_DIR, fit_from_samples
from clipsam.train.views import ViewConfig, augment, make_views, settings_tag
from conftest import BoxFillingSegmenter
from synthetic_grounding import (
    FEATURES,
    GRID,
    SIZE,
    direction,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    synthetic_store,
    write_labelled_set,
)
from test_fit import TINY, one_set
from test_grounding import HashEncoder


def test_a_view_cuts_image_and_mask_alike_and_keeps_bright_target_bright():
    rng = np.random.default_rng(0)
    mask = np.zeros((90, 120), bool)
    mask[30:60, 50:100] = True
    pixels = np.where(mask, 180.0, 40.0)
    config = ViewConfig(noise=0.0)
    for seed in range(20):
        out, cut = augment(pixels, mask, config, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == cut.shape
        assert 63 <= out.shape[0] <= 90 and 84 <= out.shape[1] <= 120
        if cut.any() and not cut.all():
            # the target is where the bright pixels are, in the cut as in the original
            assert np.array_equal(out > 127, cut)
    rgb = np.stack([pixels] * 3, axis=-1)
    out, cut = augment(rgb, mask, ViewConfig(), rng)
    assert out.shape == (*cut.shape, 3)


def test_source_cue_views_keep_the_target_where_the_mask_says():
    """Resolution, blur, contrast and a frame change the look, not where the target is."""
    mask = np.zeros((90, 120), bool)
    mask[30:60, 50:100] = True
    pixels = np.where(mask, 200.0, 30.0)
    look = ViewConfig(noise=0.0, log_gamma=0.0, min_scale=0.4, blur=1.5, log_contrast=0.3)
    for seed in range(20):
        out, cut = augment(pixels, mask, look, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == cut.shape
        if cut.sum() > 200 and (~cut).sum() > 200:
            # blurred edges aside, the target stays the bright part
            assert np.median(out[cut]) > np.percentile(out[~cut], 75)
    framed = 0
    for seed in range(20):
        out, cut = augment(pixels, mask, replace(look, border=0.2),
                           np.random.default_rng(seed))
        assert out.shape == cut.shape
        assert out.shape[0] <= 90 + 2 * 18 and out.shape[1] <= 120 + 2 * 24
        if out.shape[0] > 90:  # taller than any crop: a frame above or below
            framed += 1
            row = 0 if np.ptp(out[0]) == 0 else -1
            assert np.ptp(out[row]) == 0 and not cut[row].any()  # one grey, no target
    assert framed > 5
    # the defaults draw a crop, gamma and noise only: the earlier views' tag is kept
    assert settings_tag(ViewConfig()) != settings_tag(look)
    assert settings_tag(ViewConfig(sets=("s0",))) == settings_tag(ViewConfig())


def test_a_channel_view_is_the_gray_image_of_that_channel():
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 200  # a bright first channel everywhere
    rgb[10:30, 10:30, 1] = 255  # the target only in the second
    mask = rgb[..., 1] > 0
    config = ViewConfig(channel=1, min_side=1.0, log_gamma=0.0, noise=0.0)
    out, cut = augment(rgb, mask, config, np.random.default_rng(0))
    assert out.ndim == 2 and np.array_equal(cut, mask)
    assert out[mask].min() == 255 and out[~mask].max() == 0
    gray = np.full((40, 40), 7, np.uint8)  # a gray image has no channel to pick: kept
    assert augment(gray, mask, config, np.random.default_rng(0))[0].shape == (40, 40)
    assert settings_tag(config) != settings_tag(replace(config, channel=None))


def test_views_are_drawn_only_for_the_sets_named(tmp_path):
    write_labelled_set(tmp_path, "s0", 0, ["a"], tmp_path / "cache")
    write_labelled_set(tmp_path, "s1", 1, ["b"], tmp_path / "cache")
    samples = list_samples(tmp_path / "s0") + list_samples(tmp_path / "s1")
    views = make_views(samples, tmp_path / "views", ViewConfig(sets=("s1",)))
    assert [v.set_name for v in views] == ["s1"]


def test_views_are_written_once_and_drawn_the_same_way_again(tmp_path):
    write_labelled_set(tmp_path, "s0", 0, ["a", "b"], tmp_path / "cache")
    samples = list_samples(tmp_path / "s0")
    views = make_views(samples, tmp_path / "views", ViewConfig(per_image=2))
    tag = settings_tag(ViewConfig())
    assert [v.image_id for v in views] == [f"s0_0{i}~view{k}-{tag}" for i in (0, 1)
                                           for k in (0, 1)]
    assert [v.subject for v in views] == ["a", "a", "b", "b"]
    assert all(v.set_name == "s0" for v in views)
    first = {v.image_id: v.image_path.read_bytes() for v in views}
    assert first[views[0].image_id] != first[views[1].image_id]
    for v in views:
        assert read_mask(v.mask_path).shape == np.asarray(read_image(v.image_path).pixels).shape
        v.image_path.unlink()
    again = make_views(samples, tmp_path / "views", ViewConfig(per_image=2))
    assert {v.image_id: v.image_path.read_bytes() for v in again} == first
    # other settings draw other views under other names: nothing stale is reused
    other = make_views(samples, tmp_path / "views", ViewConfig(min_side=0.5))
    assert settings_tag(ViewConfig(min_side=0.5)) != tag
    assert not {v.image_id for v in other} & set(first)


class BrightCellSegmenter(BoxFillingSegmenter):
    """Encodes an image as the synthetic features: concept 0's direction on bright cells."""

    def encode(self, image):
        self.encoded += 1
        h, w = image.shape[:2]
        scale = SIZE / max(h, w)
        resized = (round(h * scale), round(w * scale))
        rows = (np.arange(resized[0]) / scale).astype(int)
        cols = (np.arange(resized[1]) / scale).astype(int)
        padded = np.zeros((SIZE, SIZE), np.float32)
        padded[:resized[0], :resized[1]] = np.asarray(image, np.float32)[rows][:, cols]
        cells = padded.reshape(GRID, SIZE // GRID, GRID, SIZE // GRID).mean(axis=(1, 3))
        bright = (cells > 0.5 * padded.max()).astype(np.float32)
        noise = np.random.default_rng(self.encoded).normal(size=(FEATURES, GRID, GRID))
        features = noise + bright[None] * direction(0)[:, None, None]
        return ImageEmbedding(features[None].astype(np.float32),
                              Geometry((h, w), resized, SIZE), "synthetic")


def test_fit_with_views_encodes_a_view_of_every_training_image_only(tmp_path):
    samples, cache, concepts = one_set(tmp_path)
    kept = {s.subject for s in samples if not calibration_of(s, TINY.calibration_fraction)}
    recipe = replace(TINY, views=(ViewConfig(per_image=2),))
    store = synthetic_store(cache)
    with pytest.raises(InputError, match="needs segmentation sets and the segmenter"):
        fit_from_samples(samples, store, concepts, recipe, None, encoder=HashEncoder(),
                         progress=False)
    segmenter = BrightCellSegmenter()
    out = tmp_path / "model"
    fit_from_samples(samples, store, concepts, recipe, out, segmenter=segmenter,
                     encoder=HashEncoder(), progress=False)
    info = json.loads((out / "training.json").read_text())
    assert info["train_images"] == 4 and info["views"] == 8
    assert info["calibration_images"] == 1
    views = list_samples(cache / VIEWS_DIR / "s0")
    assert sorted({v.image_id.split("~")[0] for v in views}) == sorted(
        s.image_id for s in samples if s.subject in kept)
    assert len(set(store_images([v.image_path for v in views], store))) == 8  # all stored
    assert segmenter.encoded == 8
