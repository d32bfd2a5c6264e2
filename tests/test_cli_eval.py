"""``clipsam eval`` through main(): outputs, exit codes, one-line errors, global flags."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.apps import cli
from clipsam.eval import methods
from clipsam.eval.gt_box import GtBoxOracle
from clipsam.eval.methods import Method
from clipsam.eval.seen import image_digests
from clipsam.io.labelled_sets import Sample
from clipsam.io.splits import split_of
from clipsam.pipelines.base import PipelineResult
from test_provenance import grounding_copy


def make_set(root, broken: bool = False):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(3):
        mask = np.zeros((30, 40), np.uint8)
        mask[5 + index:20, 8:30] = 255
        Image.fromarray(np.full((30, 40), 90, np.uint8)).save(root / "images" / f"{index}.png")
        Image.fromarray(mask).save(root / "masks" / f"{index}.png")
    if broken:
        (root / "images" / "1.png").write_bytes(b"not an image")
    return root


@pytest.fixture()
def fake_gt_box(monkeypatch, box_segmenter):
    """Register 'fake-box': gt-box over the box-filling segmenter, recording the config."""
    configs = []

    def factory(config) -> Method:
        configs.append(config)
        oracle = GtBoxOracle(box_segmenter)
        return Method("fake-box", lambda image, reference, prompt: oracle.run(image, reference))

    monkeypatch.setitem(methods.METHODS, "fake-box", factory)
    return configs


def test_eval_writes_outputs_and_exits_0(tmp_path, fake_gt_box, capsys):
    data = make_set(tmp_path / "set")
    code = cli.main(["-q", "eval", str(data), "--method", "fake-box", "--out",
                     str(tmp_path / "out"), "--limit", "2", "--runtime", "torch"])
    assert code == 0 and fake_gt_box[0].models.runtime == "torch"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n"] == 2 and summary["dice_mean"] == pytest.approx(1.0)
    lines = (tmp_path / "out" / "per_image.csv").read_text().splitlines()
    assert lines[0] == ("id,dice,iou,hd95,nsd,found,gt_empty,seconds,wall_seconds,error")
    assert len(lines) == 3
    out, err = capsys.readouterr()
    assert "fake-box on set: n=2" in out and "gt-box on" not in err


def test_failed_images_are_listed_and_exit_1(tmp_path, fake_gt_box, capsys):
    data = make_set(tmp_path / "set", broken=True)
    code = cli.main(["-q", "eval", str(data), "--method", "fake-box", "--out",
                     str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert "failed: 1: cannot read" in err and "1 of 3 images failed" in err.splitlines()[-1]


def test_a_single_failing_image_is_one_line_exit_1(tmp_path, fake_gt_box, capsys):
    data = make_set(tmp_path / "set")
    (data / "images" / "0.png").write_bytes(b"")
    code = cli.main(["-q", "eval", str(data), "--method", "fake-box", "--out",
                     str(tmp_path / "out"), "--limit", "1"])
    out, err = capsys.readouterr()
    assert code == 1 and not out
    assert err.count("\n") == 1 and "0.png" in err and "empty" in err


def test_unusable_data_dir_is_one_line_exit_2(tmp_path, fake_gt_box, capsys):
    code = cli.main(["eval", str(tmp_path / "nowhere"), "--method", "fake-box"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("clipsam: error:")


def test_flags_after_the_subcommand_and_unknown_method(tmp_path, fake_gt_box, capsys):
    data = make_set(tmp_path / "set")
    args = ["eval", str(data), "--method", "fake-box", "--out", str(tmp_path / "o"), "-q"]
    assert cli.main(args) == 0
    with pytest.raises(SystemExit) as info:
        cli.main(["eval", str(data), "--method", "no-such-method"])
    assert info.value.code == 2


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "eval" in capsys.readouterr().err


def make_subject_set(root, subjects, shade: int = 90):
    """One image per subject, ids 0..n-1 (pixels ``shade + id``, so every file differs), with a
    meta.csv subject column."""
    mask = np.zeros((30, 40), np.uint8)
    mask[5:20, 8:30] = 255
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(len(subjects)):
        Image.fromarray(np.full((30, 40), shade + index, np.uint8)).save(
            root / "images" / f"{index}.png")
        Image.fromarray(mask).save(root / "masks" / f"{index}.png")
    lines = ["id,subject"] + [f"{i},{s}" for i, s in enumerate(subjects)]
    (root / "meta.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture()
def fake_text_method(monkeypatch):
    """'medclipsam' replaced by a text method that fills the image (no model is loaded)."""

    def factory(config) -> Method:
        def segment(image, reference, prompt):
            return PipelineResult(np.ones(reference.shape, bool), True, np.zeros((0, 4)),
                                  np.zeros(0), prompt, "fake-text")

        return Method("fake-text", segment, reports_absence=True, needs_prompt=True)

    monkeypatch.setitem(methods.METHODS, "medclipsam", factory)


def test_subset_test_refuses_images_the_text_model_saw_under_any_folder_name(
        tmp_path, fake_text_method, capsys):
    candidates = [f"p{i}" for i in range(40)]
    held_out = [s for s in candidates if split_of(Sample("toy", s, s, Path(), Path())) == "test"]
    trained = [s for s in candidates if s not in held_out]
    toy = make_subject_set(tmp_path / "toy", held_out[:3] + trained[:2])
    images = sorted((toy / "images").iterdir())
    # trained or calibrated on images 0, 1 (of two subjects it should not have seen) and 3
    model = grounding_copy(tmp_path, subjects={"toy": {"train": [held_out[0], trained[0]],
                                                       "calibration": [held_out[1]]}},
                           image_sha256=image_digests(("toy", images[i]) for i in (0, 1, 3)))

    def run(data, *extra):
        return cli.main(["-q", "eval", str(data), "--method", "medclipsam", "--prompt",
                         "target", "--text-model", str(model), *extra])

    assert run(toy, "--subset", "test", "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "trained or calibrated on 2 of these 3 images; use --allow-seen" in err
    assert not (tmp_path / "out").exists()
    # a renamed copy of the set, and a few of its images in a folder of another name, are
    # recognised by content
    renamed = shutil.copytree(toy, tmp_path / "another_name")
    assert run(renamed, "--subset", "test", "--out", str(tmp_path / "renamed")) == 2
    assert "on 2 of these 3 images" in capsys.readouterr().err
    few = make_subject_set(tmp_path / "few", held_out[:2], shade=200)
    for i in (0, 1):
        shutil.copyfile(images[i], few / "images" / f"{i}.png")
    assert run(few, "--subset", "test", "--out", str(tmp_path / "few_out")) == 2
    assert "on 2 of these 2 images" in capsys.readouterr().err
    # other images of the same subjects, in a set of the same name, are not what it saw
    unseen = make_subject_set(tmp_path / "elsewhere" / "toy", held_out[:3] + trained[:2],
                              shade=150)
    assert run(unseen, "--subset", "test", "--out", str(tmp_path / "unseen")) == 0
    summary = json.loads((tmp_path / "unseen" / "summary.json").read_text())
    assert (summary["n_images"], summary["seen_by_text_model"]) == (3, 0)

    assert run(toy, "--subset", "test", "--allow-seen", "--out", str(tmp_path / "out")) == 0
    assert "warning: the text model was trained or calibrated on 2 of these 3" in (
        capsys.readouterr().err)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["subset"], summary["n_images"], summary["seen_by_text_model"]) == (
        "test", 3, 2)

    assert run(toy, "--out", str(tmp_path / "all")) == 0
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert (summary["subset"], summary["n_images"], summary["seen_by_text_model"]) == (
        "all", 5, 3)


def test_a_model_that_records_no_images_may_have_seen_them_all(tmp_path, fake_text_method,
                                                               capsys):
    data = make_subject_set(tmp_path / "toy", [f"p{i}" for i in range(40)])
    model = grounding_copy(tmp_path, subjects={"toy": {"train": ["p0"]}})
    code = cli.main(["eval", str(data), "--method", "medclipsam", "--prompt", "target",
                     "--text-model", str(model), "--subset", "test"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not record the images" in err
    seen, total = re.search(r"calibrated on (\d+) of these (\d+) images", err).groups()
    assert seen == total != "0"


def test_missing_cuda_is_one_line_exit_2(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data = make_set(tmp_path / "set")
    code = cli.main(["eval", str(data), "--method", "whole-box", "--device", "cuda",
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "device 'cuda'" in err
