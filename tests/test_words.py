"""Words to concepts: a prompt reaches the trained concept it means (nearest phrase through the
sentence encoder, above the cut chosen on the paraphrase list), ambiguous words are decided by
the image, and everything about the concept follows; untrained words are marked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from clipsam.errors import InputError
from clipsam.eval.paraphrases import Paraphrase, half_of, load_paraphrases, paraphrase_path
from clipsam.io.vocabulary import generic_category, target_category
from clipsam.models.grounding import load_grounding_model
from clipsam.models.grounding.words import (
    WordRule,
    decide,
    match_words,
    presence_support,
    untrained_note,
)
from clipsam.pipelines.medclipsam import MedClipSamPipeline
from clipsam.train.word_cut import Words, check_list, choose_rule, is_correct, word_cut_report
from word_fakes import THRESHOLDS, FeatureSegmenter, word_model, word_segmenter

REPO = Path(__file__).resolve().parents[1]
CUT_RESULT = REPO / "docs" / "results" / "words" / "cut.json"
IMAGE = np.zeros((64, 64), np.uint8)
IMAGE[20:40, 16:44] = 200


# --- the rule ----------------------------------------------------------------------------------


def test_decide_cuts_and_finds_ambiguity_within_the_margin():
    rule = WordRule(cut=0.6, margin=0.05)
    assert decide({"a": 0.59, "b": 0.2}, rule) == (None, [])
    assert decide({"a": 0.9, "b": 0.7}, rule) == ("a", [])
    assert decide({"a": 0.7, "b": 0.68, "c": 0.64}, rule) == ("a", ["a", "b"])
    # a close second below the cut does not make the prompt ambiguous
    assert decide({"a": 0.62, "b": 0.59}, rule) == ("a", [])
    assert decide({"b": 0.7, "a": 0.7}, WordRule(0.6, 0.0)) == ("a", [])  # ties: by name
    assert decide({}, rule) == (None, [])
    with pytest.raises(ValueError):
        WordRule(cut=1.5)


def test_a_generic_word_has_every_member_as_candidate_whatever_its_similarity():
    rule = WordRule(cut=0.6, margin=0.0)
    similarities = {"a": 0.7, "b": 0.3, "c": 0.9}
    assert decide(similarities, rule, members=("b", "a")) == ("a", ["a", "b"])
    assert decide(similarities, rule, members=("b",)) == ("b", [])  # one member is reached
    assert decide({"a": 0.2}, rule, members=("a", "z")) == ("a", ["a", "z"])  # below the cut


def test_generic_words_and_categories_come_from_the_tables():
    abnormal = "morphologically abnormal structure"
    for prompt in ("tumours", "The Tumour", "a lesion", "masses", "nodules", "an abnormality",
                   "abnormalities"):
        assert generic_category(prompt) == abnormal, prompt
    for prompt in ("lung nodule", "breast tumour", "lungs", "the", "tumour of the breast"):
        assert generic_category(prompt) is None, prompt
    assert target_category("Thyroid  nodule") == abnormal
    assert target_category("lungs") == "anatomical structure"
    assert target_category("spleen") is None


def test_an_untrained_match_records_the_nearest_concept_and_the_note():
    nearest = {"lungs": (0.4961, "lungs"), "heart": (0.31, "heart")}
    match = match_words("liver", nearest, WordRule(0.62, 0.07))
    assert match.concept is None and match.nearest == "lungs" and match.text == "liver"
    assert match.note() == ("'liver' is not a trained target; nearest: lungs (0.50); teach it "
                            "with clipsam adapt")
    assert match.decisions() == {"concept": None, "concept_similarity": 0.4961,
                                 "concept_phrase": None, "untrained": True,
                                 "nearest_concept": "lungs"}
    assert untrained_note("x", None, 0.0).startswith("'x' is not a trained target; nearest: none")
    assert presence_support(0.5, 0.5) == 0 and presence_support(0.6, 0.5) > 0
    assert presence_support(None, 0.5) == float("-inf")


# --- the model: words reach concepts, and the concept's calibration follows ------------------


def test_a_plural_reaches_its_concept_and_takes_its_calibration():
    model = word_model()
    match = model.match("Breast  Tumours")
    assert match.concept == "breast tumour" and not match.ambiguous
    assert match.similarity == pytest.approx(0.95, abs=0.01) and match.phrase == "breast tumour"
    assert model.threshold_for("breast tumours") == THRESHOLDS["breast tumour"]
    assert model.threshold_for("glioma") == THRESHOLDS["brain tumour"]  # a trained phrase
    assert model.mask_source_for("lung fields") == "map"
    assert model.box_margin_for("brain tumour") == 0.15
    exact = model.match("Glioma")
    assert (exact.concept, exact.similarity, exact.phrase) == ("brain tumour", 1.0, "glioma")


def test_an_untrained_prompt_reaches_no_concept_and_keeps_the_model_wide_rule():
    model = word_model()
    match = model.match("liver")
    assert match.concept is None and match.nearest == "lungs"
    assert match.similarity == pytest.approx(0.447, abs=0.01)
    assert model.threshold_for("liver") == 0.99 and model.mask_source_for("liver") == "segmenter"
    assert model.box_margin_for("liver") is None and model.concept_of("liver") is None
    embedding = FeatureSegmenter().encode(IMAGE)
    reached = model.reach(embedding, "liver")
    assert reached.text == "liver"  # grounded by its own words
    assert reached.presence == pytest.approx(model.presence_score(embedding, "liver"))
    assert reached.threshold == 0.99


def test_an_ambiguous_prompt_takes_the_concept_the_image_supports():
    model = word_model()
    match = model.match("tumours")
    assert match.ambiguous
    assert {c.concept for c in match.candidates} == {"breast tumour", "brain tumour"}
    embedding = FeatureSegmenter().encode(IMAGE)
    for scores, chosen in (({"breast tumour": 0.3, "brain tumour": 0.6}, "brain tumour"),
                           ({"breast tumour": 0.3, "brain tumour": 0.45}, "breast tumour")):
        # brain: 0.6 against its 0.4 beats breast: 0.3 against 0.25; at 0.45 it does not
        model.presence_score = lambda emb, text, scores=scores: scores[text]
        reached = model.reach(embedding, "tumours")
        assert reached.concept == chosen and reached.text == chosen
        assert reached.presence == scores[chosen] and reached.threshold == THRESHOLDS[chosen]
        assert reached.present
        recorded = reached.decisions()
        assert recorded["concept"] == chosen
        assert {c["concept"]: c["presence"] for c in recorded["concept_candidates"]} == scores
        assert {c["concept"]: c["threshold"] for c in recorded["concept_candidates"]} == {
            c: THRESHOLDS[c] for c in scores}
        assert model.is_present(embedding, "tumours")


def test_the_pipeline_grounds_the_reached_concept_and_records_it():
    """Through MedCLIP-SAM with the model's own presence: the ambiguous words follow whichever
    tumour the thresholds let the image support, and the mask is the concept's."""
    encoder = FeatureSegmenter()
    embedding = encoder.encode(IMAGE)
    for present, absent in (("breast tumour", "brain tumour"), ("brain tumour", "breast tumour")):
        model = word_model({present: 0.0, absent: 1.0, "lungs": 0.6})
        pipeline = MedClipSamPipeline(encoder, model)
        result = pipeline.run(IMAGE, "tumours", embedding=embedding)
        assert result.found and result.prompt == "tumours"
        assert result.decisions["concept"] == present
        assert result.decisions["concept_similarity"] == pytest.approx(0.65, abs=0.01)
        assert len(result.decisions["concept_candidates"]) == 2
        assert result.decisions["box_margin"] == (0.15 if present == "brain tumour" else 0.0)
        same = pipeline.run(IMAGE, present, embedding=embedding)
        np.testing.assert_array_equal(result.mask, same.mask)
        assert same.decisions["concept_similarity"] == 1.0
    model = word_model()
    lungs = MedClipSamPipeline(encoder, word_model({"lungs": 0.0})).run(IMAGE, "lung fields")
    assert lungs.decisions["mask_source"] == "map" and lungs.decisions["concept"] == "lungs"
    untrained = MedClipSamPipeline(encoder, model).run(IMAGE, "liver", embedding=embedding)
    assert untrained.decisions["untrained"] and untrained.decisions["concept"] is None
    assert untrained.decisions["threshold"] == 0.99
    assert untrained.decisions["presence"] == pytest.approx(
        model.presence_score(embedding, "liver"), abs=1e-4)


def test_the_word_rule_is_saved_with_the_model(tmp_path):
    model = word_model()
    model.word_rule = WordRule(0.5, 0.02)
    model.save(tmp_path / "m")
    loaded = load_grounding_model(tmp_path / "m", text_encoder=model.text_encoder)
    assert loaded.word_rule == WordRule(0.5, 0.02)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    del config["word_rule"]  # a model saved before words reached concepts: the default rule
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert load_grounding_model(tmp_path / "m").word_rule == WordRule()


def test_segment_all_finds_every_concept_from_one_encoder_pass():
    encoder = FeatureSegmenter()
    model = word_model({"breast tumour": 0.0, "lungs": 0.0, "brain tumour": 1.0})
    segmenter = word_segmenter(model=model, encoder=encoder)
    assert segmenter.concepts() == ["brain tumour", "breast tumour", "lungs"]
    found = segmenter.segment_all(IMAGE)
    assert encoder.encoded == 1
    assert {r.prompt for r in found} == {"breast tumour", "lungs"}
    assert all(r.found and r.mask.any() for r in found)
    embedding = encoder.encode(IMAGE)
    scores = {r.prompt: model.presence_score(embedding, r.prompt) for r in found}
    assert [r.prompt for r in found] == sorted(scores, key=scores.get, reverse=True)
    for result in found:
        assert result.decisions["presence"] == pytest.approx(scores[result.prompt], abs=1e-4)
        assert result.decisions["concept"] == result.prompt
    every = segmenter.segment_all(IMAGE, found_only=False)
    assert [r.prompt for r in every][-1] == "brain tumour" and not every[-1].found
    assert encoder.encoded == 2  # the image's embedding was cached (one counted re-encode above)


# --- the shipped model with the real sentence encoder -------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    return load_grounding_model()


def test_users_words_reach_the_shipped_concepts(shipped):
    for words, concept in (("tumours", None), ("a Lesion", None),
                           ("Breast tumours", "breast tumour"),
                           ("pectoral muscles", "pectoral muscle"), ("collarbone", "clavicles"),
                           ("both lung fields", "lungs"), ("foetal heads", "fetal head")):
        match = shipped.match(words)
        if concept is None:  # a generic word: every abnormal structure, the image decides
            assert match.ambiguous
            assert {c.concept for c in match.candidates} == {
                "breast tumour", "brain tumour", "thyroid nodule", "skin lesion", "polyp"}
            continue
        assert match.concept == concept and shipped.word_rule.cut <= match.similarity < 1
        assert shipped.threshold_for(words) == shipped.concept_thresholds[concept]
        assert shipped.mask_source_for(words) == shipped.mask_sources[concept]
    assert shipped.mask_source_for("pectoral muscles") == "map"
    for words in ("liver", "kidney", "optic disc", "prostate"):
        match = shipped.match(words)
        assert match.concept is None and match.similarity < shipped.word_rule.cut
        assert shipped.threshold_for(words) == shipped.presence.threshold
        assert match.note().startswith(f"'{words}' is not a trained target; nearest: ")


# --- choosing the cut on the paraphrase list -------------------------------------------------


def test_the_paraphrase_list_holds_no_trained_phrase_and_splits_in_two(shipped):
    entries = load_paraphrases()
    check_list(shipped, entries)
    halves = {e.half for e in entries}
    assert halves == {"choose", "report"}
    assert half_of("Tumours") == half_of("tumours")
    digest = hashlib.sha256(b"tumours").digest()[0]
    assert half_of("tumours") == ("choose" if digest % 2 == 0 else "report")
    kinds = {e.kind for e in entries}
    assert {"negative", "ambiguous", "plural", "synonym", "spelling"} <= kinds
    with pytest.raises(InputError, match="trained phrases"):
        check_list(shipped, [Paraphrase("glioma", ("brain tumour",), "synonym")])
    with pytest.raises(InputError, match="does not have"):
        check_list(shipped, [Paraphrase("hepar", ("liver",), "synonym")])


def test_correctness_of_a_decision():
    single = Paraphrase("tumours of the breast", ("breast tumour",), "synonym")
    assert is_correct(single, "breast tumour", []) and not is_correct(single, None, [])
    assert not is_correct(single, "breast tumour", ["breast tumour", "brain tumour"])
    negative = Paraphrase("liver", (), "negative")
    assert is_correct(negative, None, []) and not is_correct(negative, "lungs", [])
    ambiguous = Paraphrase("tumour", ("breast tumour", "brain tumour"), "ambiguous")
    assert is_correct(ambiguous, "brain tumour", ["brain tumour", "breast tumour"])
    assert is_correct(ambiguous, "brain tumour", ["brain tumour", "polyp", "breast tumour"])
    assert not is_correct(ambiguous, "brain tumour", [])
    assert not is_correct(ambiguous, "lungs", ["lungs", "brain tumour"])  # breast is missing


def test_choose_rule_takes_the_best_then_the_smallest_margin_then_the_middle_cut():
    entries = [Paraphrase("a1", ("a",), "synonym"), Paraphrase("x", (), "negative"),
               Paraphrase("ab", ("a", "b"), "ambiguous")]
    table = [Words({"a": (0.8, "a"), "b": (0.3, "b")}), Words({"a": (0.5, "a"), "b": (0.4, "b")}),
             Words({"a": (0.7, "a"), "b": (0.66, "b")})]
    rule, grid = choose_rule(entries, table, cuts=(0.4, 0.5, 0.55, 0.6, 0.7, 0.9),
                             margins=(0.0, 0.02, 0.05, 0.2))
    # all three right needs a margin above 0.04 and a cut in (0.5, 0.66]: 0.55 and 0.6 tie
    assert rule == WordRule(0.6, 0.05)
    assert grid.shape == (4, 6) and grid.max() == 3 and grid[:2].max() == 2


def test_the_committed_cut_is_the_default_rule_and_reproduces(shipped):
    result = json.loads(CUT_RESULT.read_text())
    assert WordRule(**result["rule"]) == WordRule() == shipped.word_rule
    made = result["made_by"]
    assert made["paraphrase_list_sha256"] == hashlib.sha256(
        paraphrase_path().read_bytes()).hexdigest()
    again = word_cut_report(shipped, load_paraphrases())
    assert again["rule"] == result["rule"]
    for half in ("choose", "report"):
        assert again[half]["correct"] == result[half]["correct"]
        assert result[half]["n"] > 60


def test_the_image_decides_a_generic_word_on_each_lesion_set(shipped, shared_data, litemedsam):
    """On the first calibration image with a target of each lesion set (never scored as held
    out), "tumours" reaches that set's concept, and each candidate's presence is recorded."""
    from clipsam.io.image import segmenter_input
    from clipsam.io.labelled_sets import list_samples
    from clipsam.io.masks import read_mask
    from clipsam.io.read import read_image
    from clipsam.io.splits import calibration_of, split_of

    sets = {"busi": "breast tumour", "ddti_thyroid": "thyroid nodule",
            "lgg_flair": "brain tumour", "isic_skin": "skin lesion", "kvasir_polyp": "polyp"}
    for name, concept in sets.items():
        sample = next(s for s in sorted(list_samples(shared_data / name), key=lambda s: s.image_id)
                      if split_of(s) == "train" and calibration_of(s)
                      and read_mask(s.mask_path).any())
        embedding = litemedsam.encode(segmenter_input(read_image(sample.image_path)))
        match = shipped.reach(embedding, "tumours")
        assert match.concept == concept, (name, match.decisions())
        assert len(match.decisions()["concept_candidates"]) == len(sets)
