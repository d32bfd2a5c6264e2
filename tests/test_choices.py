"""Settings chosen for every concept (clipsam.train.choices, scripts/choose_settings.py): the
images they are chosen on, the chooser's rule, what a choice records, and no choice on
held-out images."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.config import RunConfig
from clipsam.errors import InputError
from clipsam.eval.dataset import open_dataset
from clipsam.eval.methods import Method
from clipsam.io.labelled_sets import Sample
from clipsam.io.splits import calibration_of, split_of
from clipsam.pipelines.base import PipelineResult
from clipsam.pipelines.provenance import run_identity
from clipsam.train.choices import SETTINGS, Setting, choose, subset_cases

ROOT = Path(__file__).resolve().parents[1]


def _part(subject: str) -> str:
    sample = Sample("x", "x", subject, Path(), Path())
    if split_of(sample) == "test":
        return "test"
    return "calibration" if calibration_of(sample) else "train"


def _subjects(each: int) -> dict[str, list[str]]:
    """``each`` subject ids of every part: held-out, calibration, train but not calibration."""
    out: dict[str, list[str]] = {"test": [], "calibration": [], "train": []}
    for i in range(2000):
        part = out[_part(f"p{i}")]
        if len(part) < each:
            part.append(f"p{i}")
        if all(len(v) == each for v in out.values()):
            return out
    raise AssertionError("no subjects found")


PARTS = _subjects(3)


def write_set(root: Path, name: str, empty: tuple[str, ...] = ()) -> Path:
    """One image per subject of every part (``<subject>.png``), a rectangle target each, none
    for the subjects in ``empty``."""
    folder = root / name
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    subjects = sorted(s for part in PARTS.values() for s in part)
    for i, subject in enumerate(subjects):
        mask = np.zeros((32, 40), np.uint8)
        if subject not in empty:
            mask[4 + 2 * (i % 3):20, 6:30] = 255  # an even number of rows
        Image.fromarray(np.full((32, 40), 60 + i, np.uint8)).save(
            folder / "images" / f"{subject}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{subject}.png")
    (folder / "meta.csv").write_text("id,subject\n" + "".join(f"{s},{s}\n" for s in subjects))
    return folder


def test_calibration_and_train_subsets_hold_their_subjects_with_a_target(tmp_path):
    empty = (PARTS["calibration"][0],)
    dataset = open_dataset(write_set(tmp_path, "toy", empty=empty))
    calibration = subset_cases(dataset, "calibration")
    assert [c.id for c in calibration.cases] == sorted(PARTS["calibration"][1:])
    train = subset_cases(dataset, "train")
    assert [c.id for c in train.cases] == sorted(PARTS["calibration"][1:] + PARTS["train"])
    assert [c.id for c in subset_cases(dataset, "train", limit=2).cases] == [
        c.id for c in train.cases[:2]]


def test_no_subset_holds_held_out_images(tmp_path):
    dataset = open_dataset(write_set(tmp_path, "toy"))
    with pytest.raises(InputError, match="held-out") as info:
        subset_cases(dataset, "test")
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="unknown subset"):
        subset_cases(dataset, "all")


def test_calibration_refuses_subjects_the_model_trained_on(tmp_path):
    dataset = open_dataset(write_set(tmp_path, "toy"))
    with pytest.raises(InputError, match="trained on 1 of these calibration subjects"):
        subset_cases(dataset, "calibration", trained_subjects=[PARTS["calibration"][1], "zz"])
    assert subset_cases(dataset, "calibration", trained_subjects=PARTS["train"]).cases


@pytest.mark.parametrize("name", list(SETTINGS))
def test_a_settings_default_is_the_candidate_the_configuration_has(name):
    setting = SETTINGS[name]
    for candidate in setting.values:
        config = setting.config(RunConfig(), candidate)
        assert config.method == setting.method
        assert setting.default(config) == candidate
    off_list = setting.put(RunConfig(), "none of them")
    with pytest.raises(InputError, match="none of the candidates"):
        setting.default(off_list)


def _half(reference: np.ndarray) -> np.ndarray:
    """The upper half of the reference's rows: Dice 2/3."""
    rows = np.flatnonzero(reference.any(axis=1))
    out = np.zeros_like(reference)
    cut = rows[0] + len(rows) // 2
    out[:cut] = reference[:cut]
    return out


def scripted(quality):
    """A ``method_for`` whose answer depends on the candidate's configuration:
    ``quality(config)`` is "full" (the reference), "half" or "none"; "fail" fails on its first
    image and is the reference on the others. Each method carries the run's real provenance."""
    built: list[RunConfig] = []

    def method_for(config: RunConfig) -> Method:
        built.append(config)
        kind = quality(config)
        calls = []

        def segment(image, reference, prompt) -> PipelineResult:
            calls.append(prompt)
            if kind == "fail" and len(calls) == 1:
                raise RuntimeError("scripted failure")
            mask = {"full": reference, "half": _half(reference),
                    "none": np.zeros_like(reference)}.get(kind, reference)
            return PipelineResult(mask=mask, found=True, boxes=np.zeros((0, 4)),
                                  scores=np.zeros(0), prompt=prompt, method=config.method)

        return Method(config.method, segment, reports_absence=True, needs_prompt=True,
                      provenance=run_identity(config).describe())

    return method_for, built


def _per_image_dice(folder: Path) -> list[float]:
    with (folder / "per_image.csv").open() as handle:
        return [float(r["dice"]) if r["dice"] else 0.0 for r in csv.DictReader(handle)]


def test_choose_scores_every_candidate_picks_the_best_and_records_what_it_used(tmp_path):
    data = tmp_path / "data"
    write_set(data, "hc18")
    write_set(data, "busi", empty=(PARTS["calibration"][2],))
    setting = SETTINGS["map_box_rule"]
    by_rule = {"every-component": "half", "keep-0.3": "none", "largest-only": "half",
               "core-0.6": "full"}
    names = {v: k for k, v in setting.values.items()}
    method_for, built = scripted(lambda c: by_rule[names[c.medclipsam.box_rule]])
    out = tmp_path / "choices" / setting.name
    record = choose(setting, data, {"hc18": "thing one", "busi": "thing two", "isic_skin": "x"},
                    "calibration", out, progress=False, method_for=method_for)

    assert [c.medclipsam.box_rule for c in built] == list(setting.values.values())
    assert record["chosen"] == "core-0.6" and record["default"] == "every-component"
    assert record["chosen_value"] == dataclasses.asdict(setting.values["core-0.6"])
    assert record["subset"] == "calibration" and record["min_gain"] == setting.min_gain
    assert record["images"] == {"hc18": sorted(PARTS["calibration"]),
                                "busi": sorted(PARTS["calibration"][:2])}
    assert record["sets_left_out"] == ["isic_skin"]
    assert record["model_files"]["segmenter/lite_medsam.pth"] == (
        run_identity(RunConfig()).files[0].sha256)
    for name, expected in {"every-component": 2 / 3, "keep-0.3": 0.0, "core-0.6": 1.0}.items():
        candidate = record["candidates"][name]
        assert candidate["mean_dice"] == pytest.approx(expected)
        assert candidate["settings"] and candidate["by_set"]["busi"]["n"] == 2
        for set_name in ("hc18", "busi"):
            folder = out / "calibration" / name / set_name
            assert np.mean(_per_image_dice(folder)) == pytest.approx(expected)
    written = json.loads((out / "choice.json").read_text())
    assert written.pop("versions")["clipsam"] and written == json.loads(json.dumps(record))

    tables = _load("make_tables")
    tables.RESULTS = tmp_path
    lines = tables.table_choices().splitlines()
    assert lines[0].startswith("| setting | candidate | hc18 | busi | mean over sets |")
    assert "| `map_box_rule` | core-0.6 | 1.000 | 1.000 | 1.000 |" in lines[5]
    assert lines[5].endswith("| **chosen** |") and lines[2].endswith("| default |")
    assert "| `refine` | not chosen yet |" in lines[6]
    assert ("`map_box_rule` (`MedClipSamConfig.box_rule`): chosen on calibration subjects "
            "(never used for the grounding model's gradient steps), 5 images with a target in "
            "2 sets") in lines[-1]


def test_a_failed_image_counts_zero_and_a_small_gain_keeps_the_default(tmp_path):
    data = tmp_path / "data"
    write_set(data, "one")
    # "on" gives the reference on two of the three images and fails on one: as good as "off"
    method_for, _ = scripted(lambda c: "fail" if c.medclipsam.refine else "half")
    setting = SETTINGS["refine"]
    record = choose(setting, data, {"one": "thing"}, "calibration", tmp_path / "a",
                    progress=False, method_for=method_for)
    on, off = record["candidates"]["on"], record["candidates"]["off"]
    assert on["by_set"]["one"]["n_failed"] == 1 and on["by_set"]["one"]["n"] == 3
    assert on["mean_dice"] == pytest.approx(2 / 3) and off["mean_dice"] == pytest.approx(2 / 3)
    assert record["chosen"] == "off"
    # ... and a better candidate that does not beat the default by the minimum gain loses
    method_for, _ = scripted(lambda c: "full" if c.medclipsam.refine else "half")
    strict = dataclasses.replace(setting, min_gain=0.5)
    assert choose(strict, data, {"one": "thing"}, "train", tmp_path / "b", progress=False,
                  method_for=method_for)["chosen"] == "off"
    assert choose(dataclasses.replace(setting, min_gain=0.3), data, {"one": "thing"}, "train",
                  tmp_path / "c", progress=False, method_for=method_for)["chosen"] == "on"


def test_choose_refuses_held_out_images_before_running_anything(tmp_path):
    def method_for(config):
        raise AssertionError("nothing may run")

    write_set(tmp_path, "one")
    with pytest.raises(InputError, match="choices are never made on them"):
        choose(SETTINGS["refine"], tmp_path, {"one": "thing"}, "test", tmp_path / "out",
               method_for=method_for)
    assert not (tmp_path / "out").exists()


def _load(script: str):
    spec = importlib.util.spec_from_file_location(script, ROOT / "scripts" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("argv", "message"), [
    (["--subset", "test"], "held-out images, and choices are never made on them"),
    (["--setting", "nope"], "unknown setting 'nope'"),
    (["--sets", "nowhere"], "no benchmark prompt for nowhere"),
])
def test_the_script_ends_a_refused_choice_in_one_line(tmp_path, capsys, argv, message):
    assert _load("choose_settings").main(["--data", str(tmp_path), "--out", str(tmp_path / "out"),
                           *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("choose_settings.py: error: ")
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_setting_needs_its_default_among_the_candidates():
    setting = Setting("toy", "medclipsam", "MedClipSamConfig.map_level", {"0.4": 0.4},
                      lambda c: c.medclipsam.map_level, lambda c, v: c)
    with pytest.raises(InputError, match="value None is none of the candidates"):
        setting.default(RunConfig())
