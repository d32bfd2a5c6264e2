import hashlib

import numpy as np
import pytest
import torch

from clipsam.errors import InputError, WeightsError
from clipsam.models.grounding import (
    GroundingHeads,
    GroundingModel,
    HeadsConfig,
    PresenceRule,
    load_grounding_model,
)
from clipsam.models.grounding.grid import grid_box_to_image, mask_to_grid, valid_mask
from clipsam.models.image_text import DenseGrounding, ImageTextModel
from clipsam.models.segmenter import Geometry, ImageEmbedding

SMALL = HeadsConfig(feature_dim=16, text_dim=24, hidden_dim=8, embed_dim=8, dilations=(1, 2))


class HashEncoder:
    """A deterministic stand-in for the sentence encoder (no model load)."""

    dim = 24

    def __call__(self, texts):
        out = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            v = np.random.default_rng(seed).normal(size=self.dim)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32).reshape(len(texts), self.dim)


def _model(seed=0, presence=None):
    torch.manual_seed(seed)
    return GroundingModel(GroundingHeads(SMALL), presence or PresenceRule(2, 0.5),
                          text_encoder=HashEncoder())


def _embedding(seed=0, original=(40, 80), grid=16):
    rng = np.random.default_rng(seed)
    h, w = original
    scale = 64 / max(h, w)
    geometry = Geometry(original, (round(h * scale), round(w * scale)), 64)
    return ImageEmbedding(rng.normal(size=(1, 16, grid, grid)).astype(np.float32), geometry,
                          "test")


def test_grid_helpers_map_masks_and_boxes():
    emb = _embedding()
    valid = valid_mask(emb.geometry, 16)
    assert valid[:8].all() and not valid[8:].any()
    full = mask_to_grid(np.ones((40, 80), bool), emb.geometry, 16)
    np.testing.assert_allclose(full[valid], 1.0, atol=1e-6)
    assert full[~valid].max() == 0
    left = np.zeros((40, 80), bool)
    left[:, :40] = True
    frac = mask_to_grid(left, emb.geometry, 16)
    assert frac[:8, :7].min() > 0.99 and frac[:8, 9:].max() < 0.01
    box = grid_box_to_image(np.array([0, 0, 8, 4]), emb.geometry, 16)
    np.testing.assert_allclose(box, [0, 0, 40, 20], atol=1e-4)


def test_model_implements_the_shared_interfaces():
    model = _model()
    assert isinstance(model, ImageTextModel) and isinstance(model, DenseGrounding)
    text = model.encode_text(["fetal head", "polyp"])
    assert text.shape == (2, 8) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)


def test_similarity_map_is_a_probability_on_the_valid_region_only():
    model, emb = _model(), _embedding()
    prob = model.similarity_map(emb, "fetal head")
    valid = valid_mask(emb.geometry, 16)
    assert prob.shape == (16, 16) and prob.dtype == np.float32
    assert (prob[~valid] == 0).all() and (prob[valid] > 0).all() and (prob <= 1).all()
    assert not np.allclose(prob[valid], model.similarity_map(emb, "polyp")[valid])


def test_presence_follows_the_top_k_rule():
    emb = _embedding()
    model = _model()
    score = model.presence_score(emb, "lungs")
    prob = model.similarity_map(emb, "lungs")
    assert score == pytest.approx(np.sort(prob[valid_mask(emb.geometry, 16)])[-2:].mean())
    assert _model(presence=PresenceRule(2, score - 1e-4)).is_present(emb, "lungs")
    assert not _model(presence=PresenceRule(2, score + 1e-4)).is_present(emb, "lungs")


def test_region_scores_pool_patches_inside_each_mask():
    model, emb = _model(), _embedding()
    masks = np.zeros((3, 40, 80), bool)
    masks[0, :, :40] = True
    masks[1, :, 40:] = True
    scores = model.region_scores(emb, masks, ["brain tumour", "glioma"])
    patches = model.patch_embeddings(emb).numpy()
    prompt = model.encode_text(["brain tumour", "glioma"]).mean(0)
    prompt /= np.linalg.norm(prompt)
    weights = mask_to_grid(masks[0], emb.geometry, 16)
    pooled = np.einsum("hw,dhw->d", weights, patches)
    assert scores[0] == pytest.approx(pooled @ prompt / np.linalg.norm(pooled), abs=1e-5)
    assert scores[2] == -1.0 and scores[0] != pytest.approx(scores[1])
    with pytest.raises(InputError):
        model.region_scores(emb, masks[0], ["x"])


def test_bad_inputs_are_one_line_errors():
    model = _model()
    with pytest.raises(InputError):
        model.similarity_map(_embedding(), "   ")
    wrong = ImageEmbedding(np.zeros((1, 3, 16, 16), np.float32), _embedding().geometry, "x")
    with pytest.raises(InputError):
        model.similarity_map(wrong, "lungs")


def test_save_and_load_round_trip(tmp_path):
    model = _model(seed=3, presence=PresenceRule(3, 0.42))
    model.concepts["my organ"] = np.eye(8, dtype=np.float32)[0]
    model.save(tmp_path / "m")
    loaded = load_grounding_model(tmp_path / "m", text_encoder=HashEncoder())
    emb = _embedding(1)
    for text in ("fetal head", "My  Organ"):
        np.testing.assert_allclose(loaded.similarity_map(emb, text),
                                   model.similarity_map(emb, text), atol=1e-6)
    assert loaded.presence == PresenceRule(3, 0.42)
    np.testing.assert_allclose(loaded.text_vector("my organ"), np.eye(8)[0])
    size = sum(p.stat().st_size for p in (tmp_path / "m").iterdir())
    assert size < 1_000_000


def test_loading_a_folder_that_is_not_a_model_fails_clearly(tmp_path):
    with pytest.raises(WeightsError, match="not a grounding model"):
        load_grounding_model(tmp_path)


def test_map_to_boxes_keeps_large_regions_and_falls_back_to_the_peak():
    from clipsam.models.grounding.localize import map_to_boxes

    geometry = Geometry((64, 64), (64, 64), 64)
    prob = np.zeros((16, 16), np.float32)
    prob[1:5, 1:5] = 0.9
    prob[10:14, 9:13] = 0.8
    prob[15, 15] = 0.9
    boxes = map_to_boxes(prob, geometry)
    np.testing.assert_allclose(sorted(boxes.tolist()), [[4, 4, 20, 20], [36, 40, 52, 56]])
    weak = np.zeros((16, 16), np.float32)
    weak[6:8, 2:4] = 0.2
    weak[0, 0] = 0.05
    np.testing.assert_allclose(map_to_boxes(weak, geometry), [[8, 24, 16, 32]])
    assert map_to_boxes(np.zeros((16, 16)), geometry).shape == (0, 4)
