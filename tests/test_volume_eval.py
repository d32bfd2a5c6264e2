"""Scoring volumes: 3-D metrics, volumes and slice detection against hand computations, the
per-volume table, resume and failures, DICOM series, the CLI (examples/volume)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from clipsam.apps import cli
from clipsam.config import VolumeConfig
from clipsam.errors import InputError
from clipsam.eval import methods
from clipsam.eval.dataset import Case, is_volume_set, open_dataset
from clipsam.eval.methods import Method, from_pipeline
from clipsam.eval.volumes import evaluate_volumes, volume_row
from clipsam.io.read import read_image
from clipsam.pipelines.medclipsam import MedClipSamPipeline
from synthetic_volume import (
    DIM_SLICE,
    PROMPT,
    BrightSegmenter,
    MarginGrounding,
    object_mask,
    volume_pixels,
    write_example,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "volume"
CASE = Case("v", Path("v.nii.gz"), Path("m.nii.gz"))


def test_the_shipped_example_is_the_synthetic_volume(tmp_path):
    fresh = write_example(tmp_path / "volume")
    for folder in ("images", "masks"):
        shipped = read_image(EXAMPLE / folder / "phantom.nii.gz")
        made = read_image(fresh / folder / "phantom.nii.gz")
        np.testing.assert_array_equal(shipped.pixels, made.pixels)
        np.testing.assert_array_equal(shipped.affine, made.affine)
    assert read_image(EXAMPLE / "images" / "phantom.nii.gz").voxel_spacing == (3.0, 1.0, 1.0)
    np.testing.assert_array_equal(read_image(EXAMPLE / "masks" / "phantom.nii.gz").pixels > 0,
                                  object_mask())
    assert is_volume_set(open_dataset(EXAMPLE))


def test_volume_metrics_equal_hand_computations():
    reference = np.zeros((8, 10, 10), bool)
    reference[2:6, 2:6, 2:6] = True  # a 4-voxel cube on slices 2-5
    prediction = np.roll(reference, 1, axis=0)  # one slice further: slices 3-6
    row = volume_row(CASE, prediction, reference, (2.0, 0.5, 0.5), 2.0, True, 1.5, 1.2)
    # 48 of 64 voxels shared: Dice 96 / 128, IoU 48 / 80; each 64 voxels of 0.5 mm3 = 0.032 mL
    assert row.dice == pytest.approx(0.75) and row.iou == pytest.approx(0.6)
    assert row.volume_ref == pytest.approx(0.032) and row.volume_pred == pytest.approx(0.032)
    assert row.volume_error == pytest.approx(0) and row.volume_unit == "mL"
    assert (row.slices, row.slices_ref, row.slices_pred, row.slices_hit) == (8, 4, 4, 3)
    assert row.slice_precision == pytest.approx(0.75) and row.slice_recall == pytest.approx(0.75)
    assert (row.found, row.gt_empty, row.seconds, row.encode_seconds) == (True, False, 1.5, 1.2)

    # one voxel against one voxel three slices away: 6 mm at 2 mm a slice, none within 2 mm
    reference, prediction = np.zeros((8, 4, 4), bool), np.zeros((8, 4, 4), bool)
    reference[1, 1, 1] = prediction[4, 1, 1] = True
    row = volume_row(CASE, prediction, reference, (2.0, 0.5, 0.5), 2.0, True, 1.0, 1.0)
    assert row.dice == 0 and row.hd95 == pytest.approx(6.0) and row.nsd == 0
    assert row.slice_precision == 0 and row.slice_recall == 0
    # voxel units, both voxels predicted: distances 0 and 3 steps, whose 95th percentile
    # (linear) is 0.95 * 3; volumes in voxels
    row = volume_row(CASE, prediction | reference, reference, None, 2.0, True, 1.0, 1.0)
    assert row.volume_unit == "voxels" and (row.volume_ref, row.volume_pred) == (1, 2)
    assert row.volume_error == 1 and row.hd95 == pytest.approx(2.85)
    assert row.dice == pytest.approx(2 / 3) and row.nsd == pytest.approx(2 / 3)
    # an empty prediction: nothing predicted, precision undefined, recall 0
    row = volume_row(CASE, np.zeros_like(reference), reference, None, 2.0, False, 1.0, 1.0)
    assert math.isnan(row.slice_precision) and row.slice_recall == 0 and row.dice == 0


def bright_method(mode: str = "consistent", calls: list | None = None) -> Method:
    segmenter = BrightSegmenter()
    method = from_pipeline(MedClipSamPipeline(segmenter, MarginGrounding()),
                           segmenter=segmenter, volume=VolumeConfig(mode=mode))
    if calls is None:
        return method
    inner = method.segment_volume

    def counted(*args):
        calls.append(args[0].path)
        return inner(*args)

    return Method(method.name, method.segment, True, True, None, counted)


def copy_example(root: Path, broken: bool = False) -> Path:
    shutil.copytree(EXAMPLE, root)
    shutil.copy(root / "images" / "phantom.nii.gz", root / "images" / "second.nii.gz")
    shutil.copy(root / "masks" / "phantom.nii.gz", root / "masks" / "second.nii.gz")
    (root / "meta.csv").unlink()
    if broken:
        (root / "images" / "third.nii.gz").write_bytes(b"not a volume")
        shutil.copy(root / "masks" / "phantom.nii.gz", root / "masks" / "third.nii.gz")
    return root


def test_consistent_beats_slices_per_volume_and_the_table_resumes(tmp_path):
    data = open_dataset(copy_example(tmp_path / "set", broken=True))
    calls: list = []
    summary = evaluate_volumes(data, bright_method(calls=calls), tmp_path / "out", PROMPT,
                               progress=False)
    assert len(calls) == 2 and summary["n_failed"] == 1 and "third" in str(summary["failed"])
    assert summary["n"] == 2 and summary["dice_mean"] == pytest.approx(1.0)
    assert summary["slice_precision_pooled"] == 1 and summary["slice_recall_pooled"] == 1
    assert summary["volume_unit"] == "mL"
    lines = (tmp_path / "out" / "per_volume.csv").read_text().splitlines()
    assert lines[0].startswith("id,dice,iou,hd95,nsd,volume_ref,volume_pred,volume_error,")
    assert [line.split(",")[0] for line in lines[1:]] == ["phantom", "second", "third"]
    record = json.loads((tmp_path / "out" / "records" / "phantom.json").read_text())
    assert record["decisions"]["volume"]["propagated_slices"] == [DIM_SLICE]
    # 7 slices of 16 x 16 voxels of 3 mm3
    row = dict(zip(lines[0].split(","), lines[1].split(","), strict=True))
    assert float(row["volume_ref"]) == pytest.approx(7 * 256 * 3 / 1000)
    assert row["slices_ref"] == row["slices_hit"] == "7"

    # a rerun scores nothing again but the failed volume, which is tried again
    (tmp_path / "set" / "images" / "third.nii.gz").unlink()
    shutil.copy(tmp_path / "set" / "images" / "phantom.nii.gz",
                tmp_path / "set" / "images" / "third.nii.gz")
    calls.clear()
    again = evaluate_volumes(open_dataset(tmp_path / "set"), bright_method(calls=calls),
                             tmp_path / "out", PROMPT, progress=False)
    assert [Path(p).name for p in calls] == ["third.nii.gz"]
    assert again["n_failed"] == 0 and again["n"] == 3

    slices = evaluate_volumes(data, bright_method("slices"), tmp_path / "slices", PROMPT,
                              progress=False, limit=1)
    assert slices["dice_mean"] < 0.95
    # slices 2-4 and 6-8 of the object, and the far blob's slice: 6 of 7 right, 6 of 7 found
    assert slices["slice_precision_pooled"] == pytest.approx(6 / 7)
    assert slices["slice_recall_pooled"] == pytest.approx(6 / 7)


def test_a_run_with_other_units_or_mode_is_refused(tmp_path):
    data = open_dataset(EXAMPLE)
    evaluate_volumes(data, bright_method(), tmp_path / "out", PROMPT, progress=False,
                     voxel_units=True)
    row = (tmp_path / "out" / "per_volume.csv").read_text().splitlines()[1]
    assert ",voxels," in row
    with pytest.raises(InputError, match="voxel_units"):
        evaluate_volumes(data, bright_method(), tmp_path / "out", PROMPT, progress=False)


def test_a_dicom_series_folder_is_a_volume_case(tmp_path):
    from clipsam.io.nifti import write_mask_nifti
    from dicom_series import write_ct_series

    root = tmp_path / "set"
    write_ct_series(root / "images" / "series1", volume_pixels().astype(np.int16),
                    spacing=(0.5, 0.5), slice_step=2.0)
    image = read_image(root / "images" / "series1")
    (root / "masks").mkdir()
    write_mask_nifti(root / "masks" / "series1.nii.gz", object_mask(), image)
    data = open_dataset(root)
    assert is_volume_set(data) and [c.id for c in data.cases] == ["series1"]
    summary = evaluate_volumes(data, bright_method(), tmp_path / "out", PROMPT, progress=False)
    assert summary["n_failed"] == 0 and summary["dice_mean"] == pytest.approx(1.0)
    row = (tmp_path / "out" / "per_volume.csv").read_text().splitlines()[1].split(",")
    assert float(row[5]) == pytest.approx(7 * 256 * 0.5 * 0.5 * 2.0 / 1000)  # mL


def test_clipsam_eval_scores_the_example_volume(tmp_path, monkeypatch, capsys):
    configs = []

    def factory(config):
        configs.append(config)
        return bright_method(config.volume.mode)

    monkeypatch.setitem(methods.METHODS, "bright", factory)
    code = cli.main(["-q", "eval", str(EXAMPLE), "--method", "bright", "--prompt", PROMPT,
                     "--out", str(tmp_path / "out"), "--volume-mode", "slices",
                     "--save-intermediates"])
    out = capsys.readouterr().out
    assert code == 0 and configs[0].volume.mode == "slices"
    assert "1 volumes dice=" in out and "slice detection precision 0.857" in out
    assert (tmp_path / "out" / "intermediates" / "phantom" / "slices.png").is_file()
    assert cli.main(["-q", "eval", str(EXAMPLE.parent), "--method", "bright",
                     "--voxel-units"]) == 2
    assert "--voxel-units only applies to a set of volumes" in capsys.readouterr().err


def test_a_volume_counts_as_seen_by_its_patient_in_any_of_the_models_sets(tmp_path):
    """A model trains on 2-D slices, so no volume file's digest is ever recorded: a volume is
    seen when its patient is among the subjects the model lists for any set."""
    from clipsam.apps.cmd_eval import seen_by_text_model
    from clipsam.config import ModelConfig, RunConfig
    from clipsam.eval.seen import count_seen, count_seen_volumes

    root = tmp_path / "volumes"
    shutil.copytree(EXAMPLE, root)
    for folder in ("images", "masks"):
        shutil.copy(root / folder / "phantom.nii.gz", root / folder / "other.nii.gz")
    (root / "meta.csv").write_text("id,subject\nphantom,patient_a\nother,patient_b\n")
    data = open_dataset(root)
    metadata = {"subjects": {"flair_slices": {"train": ["patient_a"], "calibration": []}},
                "image_sha256": {"flair_slices": []}}
    assert count_seen([c.image_path for c in data], metadata) == 0  # content never matches
    assert count_seen_volumes(data, metadata) == 1
    assert count_seen_volumes(data, {"image_sha256": {}}) == 2  # no subjects: all may be seen
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"metadata": metadata}))
    config = RunConfig(method="medclipsam", models=ModelConfig(text_model=str(model)))
    assert seen_by_text_model(config, data, volumes=True) == 1
    assert seen_by_text_model(config, data) == 0


def test_the_builtin_model_saw_the_train_part_patients_of_lgg_volumes(shared_data):
    """lgg_volumes holds lgg_flair's patients: the 10 of the train part count as seen, the 6 of
    the test part (the volume benchmark's) do not."""
    from clipsam.config import ModelConfig
    from clipsam.eval.dataset import subject_subset
    from clipsam.eval.seen import count_seen_volumes
    from clipsam.pipelines.registry import grounding_metadata

    metadata = grounding_metadata(ModelConfig())
    data = open_dataset(shared_data / "lgg_volumes")
    train, test = subject_subset(data, "train"), subject_subset(data, "test")
    assert (len(train.cases), count_seen_volumes(train, metadata)) == (10, 10)
    assert (len(test.cases), count_seen_volumes(test, metadata)) == (6, 0)


def test_the_benchmark_compares_the_three_runs_per_volume_and_make_tables_shows_it(
        tmp_path, monkeypatch):
    """scripts/bench_volumes.py's comparison (:mod:`clipsam.eval.volume_bench`) from the runs'
    files: per-volume Dice of each run, the paired gain against the volumes' own Dice, and the
    same table in the documents (scripts/make_tables.py, ``volumes/<label>/``)."""
    import importlib.util

    from clipsam.eval.volume_bench import RUNS, compare, read_runs, table

    data = open_dataset(copy_example(tmp_path / "set"))
    out = tmp_path / "results" / "volumes" / "synthetic"
    assert read_runs(out) is None  # no runs yet
    for name, (_, mode) in RUNS.items():  # the bright method stands in for the three
        evaluate_volumes(data, bright_method(mode), out / name, PROMPT, progress=False)
    summaries, rows = read_runs(out)
    report = compare(summaries, rows, ["phantom", "second", "missing"])
    assert report["n"] == 2 and report["failed"] == ["missing"]
    dices = {name: [float(rows[name][i]["dice"]) for i in ("phantom", "second")]
             for name in RUNS}
    gain = np.mean(np.subtract(dices["consistent"], dices["slices"]))
    assert gain > 0.05 and report["consistent_minus_slices"]["mean"] == pytest.approx(gain)
    assert [v["consistent"]["dice"] for v in report["volumes"]] == dices["consistent"]
    text = table(report)
    assert "| phantom | 16 (7) |" in text and f"{gain:+.3f}" in text and "missing" in text
    assert "x the encoder passes" in text
    assert "reads, not encoder passes" in table(compare(summaries, rows, ["phantom"], stored=True))

    spec = importlib.util.spec_from_file_location(
        "make_tables", Path(__file__).resolve().parents[1] / "scripts" / "make_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    monkeypatch.setattr(tables, "RESULTS", tmp_path / "results")
    made = tables.table_volumes(shipped=False)  # a model other than the shipped recipe's
    assert made.startswith("Text model `synthetic`:") and "| second |" in made
    assert f"{gain:+.3f}" in made
    assert "No volume results" in tables.table_volumes()  # the shipped model's: none here
    monkeypatch.setattr(tables, "RESULTS", tmp_path / "nothing")
    assert "No volume results" in tables.table_volumes()
