"""``clipsam eval`` through main(): outputs, exit codes, one-line errors, global flags."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clipsam.apps import cli
from clipsam.eval import methods
from clipsam.eval.methods import Method
from clipsam.pipelines.gt_box import GtBoxPipeline


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
        pipeline = GtBoxPipeline(box_segmenter)
        return Method("fake-box", lambda image, reference, prompt: pipeline.run(image, reference))

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
    assert lines[0] == "id,dice,iou,hd95,nsd,found,gt_empty,seconds,error" and len(lines) == 3
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
