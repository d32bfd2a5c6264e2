"""``clipsam eval`` with registered pipelines: the whole-box baseline, subject subsets and the
intermediate views, on a stand-in segmenter."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clipsam.apps import cli
from clipsam.eval.dataset import open_dataset, subject_subset
from clipsam.io.labelled_sets import list_samples
from clipsam.io.splits import split_of
from clipsam.pipelines import registry


def make_set(root, subjects: int = 12):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["id,subject"]
    for index in range(subjects * 2):
        image_id, subject = f"img{index:02d}", f"s{index // 2:02d}"
        mask = np.zeros((30, 40), np.uint8)
        mask[6:24, 5:35] = 255
        Image.fromarray(np.full((30, 40), 80, np.uint8)).save(root / "images" / f"{image_id}.png")
        Image.fromarray(mask).save(root / "masks" / f"{image_id}.png")
        rows.append(f"{image_id},{subject}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture()
def stand_in_segmenter(monkeypatch, box_segmenter):
    monkeypatch.setattr(registry, "load_segmenter", lambda config: box_segmenter)
    return box_segmenter


def test_subject_subset_keeps_whole_subjects_and_partitions_the_set(tmp_path):
    data = open_dataset(make_set(tmp_path / "set"))
    test, train = subject_subset(data, "test"), subject_subset(data, "train")
    assert len(test) + len(train) == len(data)
    assert {c.id for c in test}.isdisjoint({c.id for c in train})
    subject = {s.image_id: s.subject for s in list_samples(data.root)}
    assert {subject[c.id] for c in test}.isdisjoint({subject[c.id] for c in train})
    expected = {s.image_id for s in list_samples(data.root) if split_of(s) == "test"}
    assert {c.id for c in test} == expected


def test_eval_runs_a_registered_text_free_pipeline(tmp_path, stand_in_segmenter):
    data = make_set(tmp_path / "set", subjects=2)
    out = tmp_path / "out"
    code = cli.main(["-q", "eval", str(data), "--method", "whole-box", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    # the whole-image box fills the image; the target covers 18 x 30 of 30 x 40 pixels
    expected = 2 * 18 * 30 / (18 * 30 + 30 * 40)
    assert summary["method"] == "whole-box" and summary["n"] == 4
    assert summary["dice_mean"] == pytest.approx(expected, abs=0.01)


def test_eval_subset_and_saved_views(tmp_path, stand_in_segmenter):
    data = make_set(tmp_path / "set", subjects=30)
    out = tmp_path / "out"
    code = cli.main(["-q", "eval", str(data), "--method", "whole-box", "--subset", "test",
                     "--save-intermediates", "--out", str(out)])
    assert code == 0
    held_out = [c.id for c in subject_subset(open_dataset(data), "test")]
    assert held_out, "the hash split should hold out some of 30 subjects"
    rows = (out / "per_image.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows) == sorted(held_out)
    overlay = Image.open(out / "intermediates" / held_out[0] / "overlay.png")
    assert overlay.size == (40, 30) and overlay.mode == "RGB"


def test_text_methods_need_a_prompt(tmp_path, stand_in_segmenter, monkeypatch, capsys):
    monkeypatch.setattr(registry, "load_text_model", lambda config, segmenter: object())
    data = make_set(tmp_path / "set", subjects=1)
    code = cli.main(["-q", "eval", str(data), "--method", "salip", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "needs a text prompt" in capsys.readouterr().err
