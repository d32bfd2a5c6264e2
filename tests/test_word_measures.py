"""The measures of words to concepts (paraphrase Dice, presence confusion) on a tiny labelled
set through the library's pipeline and the tiny grounding model of word_fakes."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from clipsam.eval.dataset import open_dataset
from clipsam.eval.paraphrases import Paraphrase
from clipsam.eval.word_measures import (
    WordCase,
    confusion_table,
    paraphrase_cases,
    paraphrase_dice_rows,
    presence_rows,
    summarise_paraphrase_dice,
    write_rows,
)
from word_fakes import word_model, word_segmenter


@pytest.fixture
def tiny_set(tmp_path):
    """busi-like: two 64 x 64 images with a target square, one without, one unreadable."""
    root = tmp_path / "busi"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    for index, corner in enumerate(((10, 12), (30, 20), None)):
        image = np.full((64, 64), 20, np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        if corner is not None:
            y, x = corner
            image[y:y + 16, x:x + 20] = 200 - 40 * index
            mask[y:y + 16, x:x + 20] = 255
        Image.fromarray(image).save(root / "images" / f"case{index}.png")
        Image.fromarray(mask).save(root / "masks" / f"case{index}.png")
    (root / "images" / "case3.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "masks" / "case3.png")
    return open_dataset(root)


def test_paraphrase_cases_take_the_half_and_every_concept_a_word_may_mean():
    entries = [Paraphrase("breast tumours", ("breast tumour",), "plural"),
               Paraphrase("tumours", ("breast tumour", "brain tumour", "thyroid nodule"),
                          "ambiguous"),
               Paraphrase("liver", (), "negative")]
    halves = {e.phrase: e.half for e in entries}
    cases = paraphrase_cases(entries, ["breast tumour", "brain tumour"], halves["tumours"])
    assert [(c.phrase, c.concept) for c in cases if c.phrase == "tumours"] == [
        ("tumours", "breast tumour"), ("tumours", "brain tumour")]  # no thyroid: not a concept
    assert all(c.phrase != "liver" for c in cases)
    assert all(halves[c.phrase] == halves["tumours"] for c in cases)


def test_paraphrase_dice_pairs_each_wording_with_the_trained_one(tiny_set, tmp_path):
    model = word_model({"breast tumour": 0.0, "brain tumour": 1.0, "lungs": 0.6})
    segmenter = word_segmenter(model=model)
    cases = [WordCase("breast tumours", "plural", "breast tumour"),
             WordCase("tumours", "ambiguous", "breast tumour"),
             WordCase("liver", "synonym", "breast tumour")]
    rows = paraphrase_dice_rows(segmenter, tiny_set, "breast tumour", cases)
    assert len(rows) == 3 * 3 + 1 and segmenter.encoder.encoded == 3  # one pass per image
    failed = [r for r in rows if r.get("error")]
    assert [r["id"] for r in failed] == ["case3"] and "cannot read" in failed[0]["error"]
    for row in rows:
        if row.get("error") or row["phrase"] == "liver":
            continue
        # both wordings reach breast tumour: the same mask as the trained wording
        assert row["reached"] == "breast tumour" and row["dice"] == row["trained_dice"]
    liver = [r for r in rows if r.get("phrase") == "liver"]
    assert all(r["reached"] is None for r in liver)
    summary = summarise_paraphrase_dice(rows)
    assert summary["n_failed"] == 1 and summary["n_images"] == 4
    by_phrase = {w["phrase"]: w for w in summary["wordings"]}
    assert by_phrase["breast tumours"]["difference"] == 0 and by_phrase["breast tumours"]["n"] == 2
    assert by_phrase["breast tumours"]["n_empty"] == 1
    assert by_phrase["tumours"]["reached"] == {"breast tumour": 3}
    write_rows(tmp_path / "rows.csv", rows)
    with open(tmp_path / "rows.csv") as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)


def test_the_summary_checks_both_bars():
    def row(phrase, ours, trained, image):
        return {"set": "s", "id": image, "concept": "c", "phrase": phrase, "kind": "synonym",
                "gt_empty": False, "reached": "c", "similarity": 0.9, "found": True,
                "dice": ours, "trained_found": True, "trained_dice": trained, "error": ""}

    rows = [row("a", 0.80, 0.80, "1"), row("a", 0.78, 0.80, "2"),
            row("b", 0.68, 0.80, "1"), row("b", 0.72, 0.80, "2")]
    summary = summarise_paraphrase_dice(rows)
    assert summary["mean_difference"] == pytest.approx((0.01 + 0.10) / 2)
    assert summary["worst_ratio"] == pytest.approx(0.70 / 0.80)
    assert summary["below_ratio_bar"] == ["b (c)"] and not summary["bars"]["hold"]
    assert summarise_paraphrase_dice(rows[:2])["bars"]["hold"]


def test_presence_confusion_counts_what_each_sets_images_are_said_to_hold(tiny_set):
    model = word_model({"breast tumour": 0.0, "brain tumour": 1.0, "lungs": 0.0})
    rows = presence_rows(word_segmenter(model=model), tiny_set)
    assert len(rows) == 3 * 3 + 1
    table = confusion_table(rows)
    assert table["concepts"] == ["brain tumour", "breast tumour", "lungs"]
    busi = table["sets"]["busi"]
    assert busi["n"] == 3 and busi["n_failed"] == 1
    assert busi["found_rate"] == {"brain tumour": 0.0, "breast tumour": 1.0, "lungs": 1.0}
    assert busi["found_rate_without_target"]["breast tumour"] == 1.0
    assert all(r["presence"] is not None for r in rows if not r.get("error"))
