"""The shipped grounding model, with the real text encoder and (slow) the real LiteMedSAM."""

import json
from dataclasses import asdict

import numpy as np
import pytest

from clipsam.io.image import segmenter_input
from clipsam.io.masks import read_mask
from clipsam.io.read import read_image
from clipsam.models.grounding import HeadsConfig, builtin_model_dir, load_grounding_model
from clipsam.models.grounding.grid import mask_to_grid
from clipsam.models.grounding.text_encoder import SentenceEncoder
from clipsam.postprocess.map_boxes import map_boxes
from clipsam.train.captions import builtin_concepts, cross_source_pairs
from clipsam.train.recipes import RECIPES, SHIPPED_RECIPE


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder()


def test_sentence_encoder_is_normalised_cached_and_semantic(encoder):
    vectors = encoder(["fetal head", "fetal skull", "colon polyp", "fetal head"])
    assert vectors.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[3])
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert encoder([]).shape == (0, 384)


def test_sentence_embeddings_are_reused_across_processes_without_the_transformer(
        tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path))
    first = SentenceEncoder()
    vector = first(["left and right lungs"])[0]
    assert first.loaded and len(list((tmp_path / "text").rglob("*.npy"))) == 1
    again = SentenceEncoder()  # a new process: nothing in memory
    np.testing.assert_array_equal(again(["left and right lungs"])[0], vector)
    assert not again.loaded
    again(["a wording never seen"])
    assert again.loaded
    other_limit = SentenceEncoder(max_length=8)  # other settings, other key: encoded anew
    other_limit(["left and right lungs"])
    assert other_limit.loaded and other_limit.cache_folder != first.cache_folder
    uncached = SentenceEncoder(cache=False)
    uncached(["only in memory"])
    assert len(list((tmp_path / "text").rglob("*.npy"))) == 3


def test_builtin_concepts_are_eleven_sets_whose_may_show_and_always_shows_name_others():
    concepts = builtin_concepts()
    assert len(concepts) == 11
    assert {"hc18", "busi", "cxr_lungs", "lgg_flair", "kvasir_polyp", "jsrt_heart",
            "jsrt_clavicles", "ddti_thyroid", "dsb_nuclei", "isic_skin",
            "ddsm_pectoral"} == set(concepts)
    assert len({c.target for c in concepts.values()}) == 11
    for name, concept in concepts.items():
        assert set(concept.may_show) <= set(concepts) - {name}
        assert concept.target in concept.phrases
        assert set(concept.always_shows) <= set(concepts) - {name}
        assert not set(concept.always_shows) & set(concept.may_show)
    # every chest X-ray shows the lungs, the heart and the clavicles, whichever set it is from
    chest = {"cxr_lungs", "jsrt_heart", "jsrt_clavicles"}
    for name in chest:
        assert set(concepts[name].always_shows) == chest - {name}


def test_cross_source_pairs_prompt_each_covisible_target_where_it_shows_and_where_it_cannot():
    concepts = builtin_concepts()
    pairs = cross_source_pairs(concepts)
    shown = {(t, i) for t, i, s in pairs if s}
    assert ("cxr_lungs", "jsrt_heart") in shown and ("jsrt_heart", "cxr_lungs") in shown
    assert ("jsrt_clavicles", "cxr_lungs") in shown
    never = {(t, i) for t, i, s in pairs if not s}
    assert ("cxr_lungs", "hc18") in never and ("jsrt_heart", "kvasir_polyp") in never
    assert not any(t == i for t, i, _ in pairs)
    # only targets that some set always shows are measured, and never on a set that may show it
    assert {t for t, _, _ in pairs} == {"cxr_lungs", "jsrt_heart", "jsrt_clavicles"}
    assert not any(t in concepts[i].may_show for t, i, _ in pairs)


def test_shipped_model_is_small_and_knows_its_training(encoder):
    folder = builtin_model_dir()
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert size < 5_000_000
    config = json.loads((folder / "config.json").read_text())
    trained = set(config["metadata"]["concepts"])
    # made by the shipped recipe, whose heads it holds
    assert config["metadata"]["recipe"] == SHIPPED_RECIPE
    assert config["metadata"]["training"] == asdict(RECIPES[SHIPPED_RECIPE].train)
    assert HeadsConfig.from_dict(config["heads"]) == RECIPES[SHIPPED_RECIPE].heads
    assert trained and trained <= {c.target for c in builtin_concepts().values()}
    model = load_grounding_model(text_encoder=encoder)
    assert 0 < model.presence.threshold < 1
    vectors = model.encode_text(["fetal head", "brain tumour"])
    assert vectors.shape == (2, model.heads.config.embed_dim)


@pytest.mark.slow
def test_shipped_model_finds_the_fetal_head_and_not_a_polyp(examples_dir, litemedsam, encoder):
    model = load_grounding_model(segmenter=litemedsam, text_encoder=encoder)
    image = segmenter_input(read_image(examples_dir / "images" / "002_HC.png"))
    mask = read_mask(examples_dir / "masks" / "002_HC.png")
    embedding = litemedsam.encode(image)
    prob = model.similarity_map(embedding, "fetal head")
    cells = mask_to_grid(mask, embedding.geometry, prob.shape[-1])
    assert cells.flat[int(np.argmax(prob))] > 0
    assert model.is_present(embedding, "fetal head")
    assert not model.is_present(embedding, "polyp")
    saliency = embedding.geometry.grid_to_original(prob)
    _, boxes = map_boxes(saliency >= 0.5 * saliency.max(), saliency)
    predicted = litemedsam.predict(embedding, boxes=boxes).masks.any(axis=0)
    assert (predicted & mask).sum() > 0.5 * mask.sum()
    scores = model.region_scores(embedding, np.stack([mask, ~mask]), ["fetal head"])
    assert scores[0] > scores[1]
