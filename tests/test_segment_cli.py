"""``clipsam segment`` on folders: outputs, several prompts, NIfTI, resume, bad files, parts."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import clipsam.api
from clipsam.api import Segmenter
from clipsam.apps.batch import (
    SegmentJob,
    collect_inputs,
    process_image,
    prompt_slug,
    run_local,
    select_part,
)
from clipsam.apps.cli import main
from clipsam.config import RunConfig
from clipsam.pipelines.provenance import run_identity
from test_api import FakeEncoder, FakePipeline, sample_image


class CountingFactory:
    """Stands in for ``Segmenter`` in cmd_segment: fake models, counts how often it loads."""

    loads = 0

    def __call__(self, config):
        CountingFactory.loads += 1
        return Segmenter(config, pipeline=FakePipeline(), encoder=FakeEncoder())


@pytest.fixture
def cli(monkeypatch):
    CountingFactory.loads = 0
    monkeypatch.setattr(clipsam.api, "Segmenter", CountingFactory())  # read by cmd_segment.run

    return lambda *argv: main(["segment", "-q", *argv])


def write_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def read_png(path):
    return np.asarray(Image.open(path))


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "in"
    write_png(src / "a.png", sample_image())
    write_png(src / "sub" / "b.png", sample_image(30, 50)[::-1].copy())
    (src / "broken.png").write_bytes(b"not a png at all")
    return src


def test_folder_run_writes_outputs_resumes_and_reports_failures(cli, folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(str(folder), "-p", "bright square", "-o", str(out)) == 1
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "2 segmented;" in captured.out
    assert "1 failed" in captured.out
    mask = read_png(out / "a_mask.png")
    assert mask.shape == (40, 60) and set(np.unique(mask)) == {0, 255}
    assert np.array_equal(mask == 255, sample_image() > sample_image().mean())
    assert read_png(out / "a_overlay.png").shape == (40, 60, 3)
    assert (out / "sub" / "b_mask.png").exists()
    record = json.loads((out / "a.json").read_text())
    assert record["results"][0]["found"] is True
    assert record["results"][0]["mask_file"] == "a_mask.png"
    assert record["results"][0]["provenance"]["settings"] == run_identity(RunConfig()).key
    assert CountingFactory.loads == 1

    (out / "a_mask.png").write_bytes(b"")
    assert cli(str(folder), "-p", "bright square", "-o", str(out)) == 1
    assert "2 done with the same settings, skipped" in capsys.readouterr().out
    assert (out / "a_mask.png").stat().st_size == 0
    assert cli(str(folder), "-p", "bright square", "-o", str(out), "--overwrite") == 1
    assert (out / "a_mask.png").stat().st_size > 0


def test_resume_of_finished_job_loads_no_models(cli, tmp_path, capsys):
    image = write_png(tmp_path / "in" / "a.png", sample_image())
    out = tmp_path / "out"
    assert cli(str(image), "-p", "bright", "-o", str(out)) == 0
    assert cli(str(image), "-p", "bright", "-o", str(out)) == 0
    assert CountingFactory.loads == 1
    assert "1 done with the same settings, skipped" in capsys.readouterr().out
    assert cli(str(image), "-p", "dark", "-o", str(out)) == 0
    assert CountingFactory.loads == 2


def test_results_of_other_settings_are_redone_and_counted(cli, tmp_path, capsys):
    for name in "ab":
        write_png(tmp_path / "in" / f"{name}.png", sample_image())
    out = tmp_path / "out"
    assert cli(str(tmp_path / "in"), "-p", "bright", "-o", str(out)) == 0
    capsys.readouterr()
    write_png(tmp_path / "in" / "c.png", sample_image())
    other = ("--method", "salip")
    assert cli(str(tmp_path / "in"), "-p", "bright", "-o", str(out), *other) == 0
    assert ("1 segmented; 0 done with the same settings, skipped; 2 made with other settings, "
            "redone; 0 failed") in capsys.readouterr().out
    salip = run_identity(RunConfig(method="salip")).key
    for name in "abc":
        results = json.loads((out / f"{name}.json").read_text())["results"]
        assert results[0]["provenance"]["settings"] == salip
    assert cli(str(tmp_path / "in"), "-p", "bright", "-o", str(out), *other) == 0
    assert "0 segmented; 3 done with the same settings, skipped; 0 made" in (
        capsys.readouterr().out)
    assert CountingFactory.loads == 2


@pytest.mark.parametrize(("options", "words"), [
    (("--device", "cuda"), "device 'cuda'"),
    (("--segmenter", "sam-vit-b"), "trained on litemedsam image features"),
])
def test_unusable_settings_are_one_line_exit_2_before_loading(cli, tmp_path, capsys, options,
                                                              words):
    import torch

    if options[1] == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    image = write_png(tmp_path / "a.png", sample_image())
    assert cli(str(image), "-p", "bright", "-o", str(tmp_path / "out"), *options) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and CountingFactory.loads == 0


def test_several_prompts_and_not_found(cli, tmp_path):
    image = write_png(tmp_path / "scan.png", sample_image())
    out = tmp_path / "out"
    prompts = ["bright square", "absent lesion"]
    assert cli(str(image), "-p", prompts[0], "-p", prompts[1], "-o", str(out)) == 0
    bright = read_png(out / f"scan_{prompt_slug(prompts[0])}_mask.png")
    absent = read_png(out / f"scan_{prompt_slug(prompts[1])}_mask.png")
    assert bright.any() and not absent.any()
    results = json.loads((out / "scan.json").read_text())["results"]
    assert [r["prompt"] for r in results] == prompts
    assert [r["found"] for r in results] == [True, False]


def test_nifti_volume_gets_nifti_mask_with_same_affine(cli, tmp_path):
    volume = np.stack([sample_image(), np.zeros((40, 60), np.uint8)]).astype(np.float32)
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    affine[:3, 3] = [10, -5, 3]
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(volume, (2, 1, 0)), affine), path)
    out = tmp_path / "out"
    assert cli(str(path), "-p", "bright", "-o", str(out)) == 0
    mask = nib.load(out / "vol_mask.nii.gz")
    assert np.allclose(mask.affine, affine)
    assert mask.shape == (60, 40, 2)
    data = np.asarray(mask.dataobj)
    assert data[..., 0].sum() == 15 * 25 and data[..., 1].sum() == 0
    assert (out / "vol_overlay.png").exists()


def test_single_bad_file_is_one_line(cli, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    assert cli(str(bad), "-p", "bright", "-o", str(tmp_path / "out")) != 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.png" in lines[0]
    assert cli(str(tmp_path / "missing"), "-p", "x", "-o", str(tmp_path / "out")) == 2
    assert "no image found" in capsys.readouterr().err


def test_globs_parts_and_clashing_names(tmp_path):
    for name in "abcde":
        write_png(tmp_path / "in" / f"{name}.png", sample_image())
    items = collect_inputs([str(tmp_path / "in" / "*.png")])
    assert [i.stem for i in items] == list("abcde")
    parts = [select_part(items, 2, k) for k in (0, 1)]
    assert [i.stem for i in parts[0]] == ["a", "c", "e"]
    assert sorted(i.stem for p in parts for i in p) == list("abcde")
    write_png(tmp_path / "other" / "a.png", sample_image())
    with pytest.raises(Exception, match="both write"):
        collect_inputs([str(tmp_path / "in"), str(tmp_path / "other" / "a.png")])


def test_outputs_inside_input_folder_are_not_inputs(cli, tmp_path):
    write_png(tmp_path / "a.png", sample_image())
    assert cli(str(tmp_path), "-p", "bright", "-o", str(tmp_path / "out")) == 0
    assert [i.stem for i in collect_inputs([str(tmp_path)], out_dir=tmp_path / "out")] == ["a"]


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "timings"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def test_overlapped_folder_run_writes_what_a_serial_run_writes(folder, tmp_path):
    for i in range(4):
        write_png(folder / f"c{i}.png", np.roll(sample_image(), 7 * i, axis=1))
    prompts = ("bright square", "dark")
    settings = run_identity(RunConfig()).key
    items = collect_inputs([str(folder)])

    def make():
        return Segmenter(RunConfig(), pipeline=FakePipeline(), encoder=FakeEncoder())

    overlapped = run_local(items, SegmentJob(prompts, tmp_path / "overlapped", settings), make)
    serial_job = SegmentJob(prompts, tmp_path / "serial", settings)
    segmenter = make()
    outcomes = [process_image(segmenter, item, serial_job) for item in items]
    assert overlapped.done == sum(o.status == "done" for o in outcomes) == 6
    assert [p for p, _ in overlapped.failed] == [o.path for o in outcomes if o.status == "failed"]
    files = sorted(p.relative_to(tmp_path / "serial")
                   for p in (tmp_path / "serial").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "overlapped")
                           for p in (tmp_path / "overlapped").rglob("*") if p.is_file())
    assert len(files) == 6 * 5  # per image: a mask and an overlay per prompt, and the record
    for name in files:
        serial, other = (tmp_path / "serial" / name), (tmp_path / "overlapped" / name)
        if name.suffix == ".json":
            assert (_without_timings(json.loads(serial.read_text()))
                    == _without_timings(json.loads(other.read_text())))
        else:
            assert serial.read_bytes() == other.read_bytes(), name


@pytest.fixture
def word_cli(monkeypatch):
    """``clipsam segment`` on the tiny grounding model of word_fakes (real pipeline): breast
    tumour and lungs present on every image, brain tumour never."""
    from word_fakes import word_model, word_segmenter

    thresholds = {"breast tumour": 0.0, "lungs": 0.0, "brain tumour": 1.0}
    monkeypatch.setattr(clipsam.api, "Segmenter",
                        lambda config: word_segmenter(config, word_model(thresholds)))
    return lambda *argv: main(["segment", "-q", *argv])


def test_the_record_says_which_concept_each_prompt_reached(word_cli, tmp_path, capsys):
    image = write_png(tmp_path / "scan.png", sample_image(64, 64))
    out = tmp_path / "out"
    assert word_cli(str(image), "-p", "tumours", "-p", "liver", "-p", "Breast tumours",
                    "-o", str(out)) == 0
    tumours, liver, breast = json.loads((out / "scan.json").read_text())["results"]
    assert tumours["decisions"]["concept"] == "breast tumour"  # the one the image supports
    assert {c["concept"] for c in tumours["decisions"]["concept_candidates"]} == {
        "breast tumour", "brain tumour"}
    assert breast["decisions"]["concept"] == "breast tumour"
    assert breast["decisions"]["concept_similarity"] == pytest.approx(0.95, abs=0.01)
    assert liver["decisions"]["concept"] is None and liver["decisions"]["untrained"]
    assert liver["decisions"]["threshold"] == 0.99
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("'liver' is not a trained target; nearest: lungs (0.45); teach it with "
                        "clipsam adapt")
    assert sum("not a trained target" in line for line in lines) == 1


def test_all_finds_every_trained_concept_and_writes_the_masks_of_those_found(word_cli, tmp_path,
                                                                              capsys):
    image = write_png(tmp_path / "scan.png", sample_image(64, 64))
    out = tmp_path / "out"
    assert word_cli(str(image), "--all", "-o", str(out)) == 0
    record = json.loads((out / "scan.json").read_text())
    assert record["all_concepts"] is True
    results = {r["prompt"]: r for r in record["results"]}
    assert set(results) == {"breast tumour", "brain tumour", "lungs"}
    assert not results["brain tumour"]["found"] and "mask_file" not in results["brain tumour"]
    for name in ("breast tumour", "lungs"):
        assert results[name]["found"] and results[name]["decisions"]["presence"] > 0
        mask = read_png(out / results[name]["mask_file"])
        assert mask.any() and results[name]["mask_file"] == f"scan_{prompt_slug(name)}_mask.png"
    assert not (out / "scan_brain-tumour_mask.png").exists()
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"{image}: found ") and "breast tumour (" in line and "lungs (" in line
    assert word_cli(str(image), "--all", "-o", str(out)) == 0  # done: skipped
    assert "1 done with the same settings, skipped" in capsys.readouterr().out
    # a prompt job's record does not count as an --all job's, nor the reverse
    assert word_cli(str(image), "-p", "lungs", "-o", str(out)) == 0
    assert "1 segmented" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_code:
        word_cli(str(image), "--all", "-p", "lungs", "-o", str(out))
    assert exit_code.value.code == 2 and "not allowed with" in capsys.readouterr().err


@pytest.fixture
def points_cli(monkeypatch):
    """``clipsam segment`` on the tiny grounding model of word_fakes with every operating
    point: every concept found at recall (threshold 0), none at precision (threshold 1)."""
    from word_fakes import word_model, word_segmenter

    thresholds = dict.fromkeys(("breast tumour", "lungs", "brain tumour"), 0.0)
    points = {name: {"balanced": 0.0, "precision": 1.0} for name in thresholds}
    monkeypatch.setattr(clipsam.api, "Segmenter",
                        lambda config: word_segmenter(config, word_model(thresholds,
                                                                         points=points)))
    return lambda *argv: main(["segment", "-q", *argv])


def test_the_presence_operating_point_decides_not_found_and_is_recorded(points_cli, tmp_path,
                                                                        capsys):
    image = write_png(tmp_path / "scan.png", sample_image(64, 64))
    out = tmp_path / "out"
    assert points_cli(str(image), "-p", "lungs", "-o", str(out)) == 0
    lungs = json.loads((out / "scan.json").read_text())["results"][0]
    assert lungs["found"] and lungs["decisions"]["presence_point"] == "recall"
    assert lungs["decisions"]["threshold"] == 0.0
    assert lungs["provenance"]["config"]["presence"] == "recall"
    # another operating point is another setting: the image is redone, and not found
    assert points_cli(str(image), "-p", "lungs", "-o", str(out), "--presence", "precision") == 0
    assert "1 made with other settings, redone" in capsys.readouterr().out
    lungs = json.loads((out / "scan.json").read_text())["results"][0]
    assert not lungs["found"] and lungs["decisions"]["presence_point"] == "precision"
    assert lungs["decisions"]["threshold"] == 1.0
    assert lungs["decisions"]["presence"] < 1.0
    assert points_cli(str(image), "--all", "-o", str(tmp_path / "all"),
                      "--presence", "precision") == 0
    assert "no trained target found" in capsys.readouterr().out


def test_a_model_without_operating_points_refuses_them_in_one_line(word_cli, tmp_path, capsys):
    image = write_png(tmp_path / "scan.png", sample_image(64, 64))
    assert word_cli(str(image), "-p", "lungs", "-o", str(tmp_path / "out"),
                    "--presence", "balanced") == 2  # a user error: the one error policy
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no 'balanced' presence point" in err
    assert err.startswith("clipsam: error:")
    assert "--presence recall" in err


def test_test_time_flips_are_a_recorded_medclipsam_setting(points_cli, tmp_path, capsys):
    image = write_png(tmp_path / "scan.png", sample_image(64, 64))
    out = tmp_path / "out"
    assert points_cli(str(image), "-p", "lungs", "-o", str(out), "--tta", "hflip") == 0
    lungs = json.loads((out / "scan.json").read_text())["results"][0]
    assert lungs["provenance"]["config"]["medclipsam"]["tta"] == ["hflip"]
    assert "tta" in lungs["provenance"]["timings"]
    assert points_cli(str(image), "-p", "lungs", "-o", str(tmp_path / "s"), "--method", "salip",
                      "--tta", "hflip") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--tta applies to medclipsam's decoding" in err


def test_the_mask_prompt_is_a_recorded_medclipsam_setting(points_cli, tmp_path, capsys):
    image = write_png(tmp_path / "scan.png", sample_image(64, 64))
    out = tmp_path / "out"
    assert points_cli(str(image), "-p", "breast tumour", "-o", str(out)) == 0
    plain = json.loads((out / "scan.json").read_text())["results"][0]
    assert "mask_prompt" not in plain["decisions"]
    assert points_cli(str(image), "-p", "breast tumour", "-o", str(out), "--mask-prompt") == 0
    assert "1 made with other settings, redone" in capsys.readouterr().out
    tumour = json.loads((out / "scan.json").read_text())["results"][0]
    assert tumour["provenance"]["config"]["medclipsam"]["mask_prompt"] is True
    assert tumour["decisions"]["mask_source"] == "segmenter"
    assert tumour["decisions"]["mask_prompt"] is True
    # a concept answered from its map gets no second round, and its record says so
    assert points_cli(str(image), "-p", "lungs", "-o", str(out), "--mask-prompt") == 0
    lungs = json.loads((out / "scan.json").read_text())["results"][0]
    assert (lungs["decisions"]["mask_source"], lungs["decisions"]["mask_prompt"]) == ("map",
                                                                                     False)
    assert points_cli(str(image), "-p", "breast tumour", "-o", str(tmp_path / "s"),
                      "--method", "salip", "--mask-prompt") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--mask-prompt applies to medclipsam's decoding" in err
