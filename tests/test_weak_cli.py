"""``clipsam weak-train`` end to end with a stand-in cascade, and ``--method weak`` in eval."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from clipsam.apps import cmd_weak_train
from clipsam.apps.cli import main
from clipsam.config import RunConfig
from clipsam.errors import InputError
from clipsam.eval.methods import build_method
from clipsam.pipelines import registry
from clipsam.pipelines.base import PipelineResult
from clipsam.pipelines.weak import WeakPipeline


class BrightCascade:
    name = "medclipsam"

    def run(self, image, prompt, embedding=None, keep_intermediates=False):
        assert embedding == ("encoded", image.shape)
        mask = np.asarray(image) > 125
        return PipelineResult(mask=mask, found=bool(mask.any()), boxes=np.zeros((0, 4)),
                                  scores=np.zeros(0), prompt=prompt, method=self.name)


class ShapeEncoder:
    def encode(self, image):
        return ("encoded", image.shape)


@pytest.fixture
def stand_in_cascade(monkeypatch):
    loaded = []

    def load_models(config, with_text=True):
        loaded.append(config)
        return SimpleNamespace(segmenter=ShapeEncoder(), text=None, config=config)

    monkeypatch.setattr(registry, "load_models", load_models)
    monkeypatch.setattr(registry, "build_pipeline", lambda config, models: BrightCascade())
    threads = torch.get_num_threads()
    yield loaded
    torch.set_num_threads(threads)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images" / "site"
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:48, :40]
    for index in range(6):
        cy, cx = rng.uniform(14, 30), rng.uniform(14, 26)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 64
        image = np.clip(50 + 150 * disc + rng.normal(0, 10, disc.shape), 0, 255)
        Image.fromarray(image.astype(np.uint8)).save(folder / f"scan_{index}.png")
    return tmp_path / "images"


def weak_train(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cmd_weak_train.add_parser(parser.add_subparsers())
    args = parser.parse_args(["weak-train", *argv])
    args.quiet = 1
    return args.func(args)


def test_weak_train_writes_model_folder_usable_by_eval(stand_in_cascade, image_folder, tmp_path,
                                                       capsys, monkeypatch):
    out = tmp_path / "model"
    code = weak_train(str(image_folder), "-p", "bright disc", "--out", str(out), "--size", "32",
                      "--steps", "3", "--cycles", "2", "--seed", "5", "--threads", "1")
    assert code == 0
    printed = capsys.readouterr()
    assert ("trained on 5 of 6 images (6 with 'bright disc' found, 0 negatives; 1 held out)"
            in printed.out)
    # three steps teach nothing: the agreement is stated, and found too low
    config = json.loads((out / "config.json").read_text())
    agreement = config["agreement"]
    assert (f"agreement with the teacher on 1 held-out images (1 subjects): Dice "
            f"{agreement:.3f} (floor 0.5)") in printed.out
    assert agreement < 0.5 and "has not learned the target" in config["warning"]
    assert "--network head" in config["warning"]
    assert printed.err.strip() == f"warning: {config['warning']}"
    assert [entry["step"] for entry in config["history"]] == [2, 3]
    assert all(entry["loss"] > 0 and 0 <= entry["agreement"] <= 1 for entry in config["history"])
    assert [origin["step"] for origin in config["member_origins"]] == [2, 3]
    assert [item["held_out"] for item in config["data"]].count(True) == 1
    assert config["train"]["size"] == 32 and config["train"]["seed"] == 5
    assert config["in_channels"] == 1 and config["prompt"] == "bright disc"
    assert config["pseudo_method"] == "medclipsam"
    assert [item["id"] for item in config["data"]] == [f"site/scan_{i}" for i in range(6)]
    assert config["members"] == ["member_0.safetensors", "member_1.safetensors"]
    assert sorted(p.name for p in (out / "pseudo" / "site").iterdir()) == sorted(
        [f"scan_{i}.png" for i in range(6)] + [f"scan_{i}_unsure.png" for i in range(6)])
    assert len(config["teacher"]) == 16 and config["train_seconds"] > 0
    assert stand_in_cascade[0].segmenter == "litemedsam"

    method = build_method("weak", RunConfig(weak_model=out))
    image = np.asarray(Image.open(image_folder / "site" / "scan_0.png"))
    result = method.segment(image, np.zeros_like(image), "bright disc")
    assert result.method == "weak" and result.mask.shape == image.shape
    assert method.reports_absence

    monkeypatch.undo()  # the real registry from here: segment with the trained network
    segmented = tmp_path / "segmented"
    source = str(image_folder / "site" / "scan_0.png")
    argv = ["segment", "-q", source, "-p", "bright disc", "-o", str(segmented), "--method",
            "weak", "--model", str(out)]
    assert main(argv) == 0
    written = tifffile.imread(segmented / "scan_0_uncertainty.tif")
    expected = WeakPipeline(out).run(image, "bright disc", keep_intermediates=True)
    np.testing.assert_array_equal(written, expected.intermediates["uncertainty"])
    assert written.dtype == np.float32 and written.max() <= 1.0
    record = json.loads((segmented / "scan_0.json").read_text())
    assert record["results"][0]["uncertainty_file"] == "scan_0_uncertainty.tif"
    assert list(record["results"][0]["provenance"]["models"]) == ["weak_model"]  # no segmenter
    # the student that did not learn is said so, on screen and in the record
    assert capsys.readouterr().err.strip() == f"warning: {config['warning']}"
    assert record["results"][0]["provenance"]["models"]["weak_model"]["warning"] == (
        config["warning"])
    (segmented / "scan_0_uncertainty.tif").unlink()  # an output missing: the image is redone
    assert main(argv) == 0 and (segmented / "scan_0_uncertainty.tif").is_file()

    # weak-box: the network's boxes prompt the installed segmenter (LiteMedSAM)
    boxed = tmp_path / "boxed"
    assert main([*argv[:6], str(boxed), "--method", "weak-box", "--model", str(out)]) == 0
    record = json.loads((boxed / "scan_0.json").read_text())
    result = record["results"][0]
    assert sorted(result["provenance"]["models"]) == ["segmenter", "weak_model"]
    assert result["method"] == "weak-box" and (boxed / "scan_0_uncertainty.tif").is_file()
    assert result["found"] == bool(np.asarray(Image.open(boxed / "scan_0_mask.png")).any())


def test_weak_train_rejects_bad_arguments(stand_in_cascade, image_folder, tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        weak_train(str(tmp_path / "missing"), "-p", "disc", "--out", str(tmp_path / "m"))
    with pytest.raises(InputError, match="multiple of 16"):
        weak_train(str(image_folder), "-p", "disc", "--out", str(tmp_path / "m"), "--size", "40")
    with pytest.raises(InputError, match="needs --model"):
        build_method("weak", RunConfig())
    with pytest.raises(InputError, match="different folders"):
        weak_train(str(image_folder), "-p", "disc", "--out", str(tmp_path / "m"), "--method",
                   "weak-box", "--model", str(tmp_path / "m"))


def test_weak_train_takes_one_part_of_a_labelled_set_and_negatives(stand_in_cascade, tmp_path,
                                                                   capsys, monkeypatch):
    from clipsam.io.labelled_sets import list_samples
    from clipsam.io.splits import split_of

    labelled = tmp_path / "set"
    (labelled / "images").mkdir(parents=True)
    (labelled / "masks").mkdir()
    negatives = tmp_path / "normals"
    negatives.mkdir()
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:32, :32]
    for index in range(12):
        disc = (yy - 16) ** 2 + (xx - 16) ** 2 <= 30
        image = np.clip(50 + 150 * disc + rng.normal(0, 10, disc.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(labelled / "images" / f"case_{index:02d}.png")
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(labelled / "masks" /
                                                           f"case_{index:02d}.png")
    for index in range(2):
        plain = np.clip(50 + rng.normal(0, 10, (32, 32)), 0, 255).astype(np.uint8)
        Image.fromarray(plain).save(negatives / f"normal_{index}.png")
    # three images per patient: the split and the validation hold-out keep them together
    (labelled / "meta.csv").write_text("id,patient\n" + "".join(
        f"case_{index:02d},p{index // 3}\n" for index in range(12)))
    out = tmp_path / "model"
    assert weak_train(str(labelled), "-p", "disc", "--out", str(out), "--subset", "train",
                      "--negatives", str(negatives), "--size", "32", "--steps", "1",
                      "--cycles", "1", "--threads", "1") == 0
    train_ids = [s.image_id for s in list_samples(labelled) if split_of(s) == "train"]
    assert 0 < len(train_ids) < 12  # the split leaves some subjects out
    data = json.loads((out / "config.json").read_text())["data"]
    assert [d["id"] for d in data] == [*train_ids, "normal_0", "normal_1"]
    assert [d["negative"] for d in data] == [False] * len(train_ids) + [True, True]
    assert all(d["used"] for d in data)
    assert [d["subject"] for d in data] == [f"p{int(i[-2:]) // 3}" for i in train_ids] + [
        "normal_0", "normal_1"]
    held = {d["subject"] for d in data if d["held_out"]}
    assert len(held) == 1  # a fifth of 2-3 subjects, at least one; never a negative
    assert all(d["held_out"] == (d["subject"] in held) for d in data)
    assert (f"trained on {len(train_ids) + 2 - 3} of {len(train_ids) + 2} images" in
            capsys.readouterr().out)
    # one step teaches nothing: clipsam eval says so, and its summary records it
    warning = json.loads((out / "config.json").read_text())["warning"]
    assert "has not learned the target" in warning
    monkeypatch.undo()
    assert main(["eval", "-q", str(labelled), "--method", "weak", "--model", str(out),
                 "--out", str(tmp_path / "eval")]) == 0
    assert f"warning: {warning}" in capsys.readouterr().err
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["provenance"]["models"]["weak_model"]["warning"] == warning


class BrightTeacher(BrightCascade):
    """The stand-in cascade for runs whose encoder is the real segmenter."""

    def run(self, image, prompt, embedding=None, keep_intermediates=False):
        assert embedding.geometry.original_size == image.shape[:2]
        return super().run(image, prompt, ("encoded", image.shape), keep_intermediates)


def test_head_network_trains_and_segments_on_the_installed_segmenter(image_folder, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr(registry, "build_pipeline", lambda config, models: BrightTeacher())
    out = tmp_path / "head"
    assert weak_train(str(image_folder), "-p", "bright disc", "--out", str(out), "--network",
                      "head", "--steps", "2", "--cycles", "1", "--threads", "1") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["network"] == "head" and config["in_channels"] == 256
    assert config["feature_model"].startswith("litemedsam")
    monkeypatch.undo()
    assert registry.weak_model_reads_embedding(out)
    segmented = tmp_path / "segmented"
    source = str(image_folder / "site" / "scan_0.png")
    assert main(["segment", "-q", source, "-p", "bright disc", "-o", str(segmented),
                 "--method", "weak", "--model", str(out)]) == 0
    result = json.loads((segmented / "scan_0.json").read_text())["results"][0]
    assert result["method"] == "weak"  # the network's own mask, on the segmenter's embedding
    assert sorted(result["provenance"]["models"]) == ["segmenter", "weak_model"]
    assert (segmented / "scan_0_uncertainty.tif").is_file()
