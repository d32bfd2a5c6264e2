"""The evaluation set reader and the harness: rows, summary, failures, empty references, resume."""

from __future__ import annotations

import csv
import dataclasses
import json
import time

import numpy as np
import pytest
from PIL import Image

from clipsam.config import ModelConfig, RunConfig
from clipsam.errors import InputError
from clipsam.eval.dataset import load_case, open_dataset
from clipsam.eval.gt_box import GtBoxOracle
from clipsam.eval.harness import evaluate
from clipsam.eval.methods import Method
from clipsam.pipelines.base import PipelineResult
from clipsam.pipelines.provenance import run_identity


def save(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_set(root, spacing: bool = True):
    """a: rectangle target; b: two rectangles; c: empty reference; d: corrupt image."""
    image = np.full((40, 50), 80, np.uint8)
    masks = {name: np.zeros((40, 50), np.uint8) for name in "abc"}
    masks["a"][5:15, 10:30] = 255
    masks["b"][2:8, 2:8] = 255
    masks["b"][20:35, 30:45] = 255
    for name, mask in masks.items():
        save(root / "images" / f"{name}.png", image)
        save(root / "masks" / f"{name}.png", mask)
    (root / "images" / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    save(root / "masks" / "d.png", masks["c"])
    lines = ["id,pixel_spacing_mm"] + [f"{n},{0.5 if spacing else ''}" for n in "abcd"]
    (root / "meta.csv").write_text("\n".join(lines) + "\n")
    return root


def read_rows(out):
    with (out / "per_image.csv").open() as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


class Counting:
    """A gt-box method over the box-filling segmenter that counts the images it sees."""

    def __init__(self, segmenter) -> None:
        self.oracle = GtBoxOracle(segmenter)
        self.seen: list[tuple[int, int]] = []

    def method(self) -> Method:
        def segment(image, reference, prompt) -> PipelineResult:
            self.seen.append(image.shape)
            return self.oracle.run(image, reference)

        return Method("gt-box", segment)


def test_dataset_lists_sorted_ids_with_spacing(tmp_path):
    dataset = open_dataset(make_set(tmp_path / "set"))
    assert dataset.name == "set" and [c.id for c in dataset] == ["a", "b", "c", "d"]
    assert dataset.cases[0].spacing == (0.5, 0.5)
    loaded = load_case(dataset.cases[0])
    assert loaded.mask.dtype == bool and loaded.mask.sum() == 200
    assert open_dataset(make_set(tmp_path / "nospacing", spacing=False)).cases[0].spacing is None


def test_mask_of_another_size_names_both_files(tmp_path):
    root = make_set(tmp_path / "set")
    save(root / "masks" / "a.png", np.zeros((41, 50), np.uint8))
    with pytest.raises(InputError) as info:
        load_case(open_dataset(root).cases[0])
    message = str(info.value)
    assert "\n" not in message and "masks/a.png" in message and "images/a.png" in message


def test_not_an_evaluation_set(tmp_path):
    with pytest.raises(InputError, match="not an evaluation set"):
        open_dataset(tmp_path)


def test_harness_rows_summary_and_failures(tmp_path, box_segmenter):
    dataset = open_dataset(make_set(tmp_path / "set"))
    summary = evaluate(dataset, Counting(box_segmenter).method(), tmp_path / "out",
                       progress=False)
    rows = read_rows(tmp_path / "out")
    assert list(rows) == ["a", "b", "c", "d"]
    assert float(rows["a"]["dice"]) == pytest.approx(1.0) and rows["a"]["found"] == "true"
    assert rows["a"]["hd95"] == "0" and float(rows["a"]["seconds"]) >= 0
    assert rows["c"]["gt_empty"] == "true" and rows["c"]["hd95"] == ""
    assert rows["d"]["error"] and "d.png" in rows["d"]["error"] and rows["d"]["dice"] == ""
    assert summary["n"] == 2 and summary["n_images"] == 4 and summary["n_failed"] == 1
    assert summary["dice_mean"] == pytest.approx(1.0) and summary["nsd_mean"] == 1.0
    assert summary["gt_empty"] == {"n": 1, "not_found_accuracy": None}
    assert summary["failed"][0]["id"] == "d"
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["dice_median"] == summary["dice_median"] and "versions" in on_disk


def test_summary_scores_imperfect_masks_and_absence(tmp_path):
    dataset = open_dataset(make_set(tmp_path / "set"))

    def half(image, reference, prompt) -> PipelineResult:
        mask = reference.copy()
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size:
            mask[rows[: rows.size // 2]] = False
        return PipelineResult(mask, bool(mask.any()), np.zeros((0, 4)), np.zeros(0),
                                  prompt, "half")

    summary = evaluate(dataset, Method("half", half, reports_absence=True, needs_prompt=True),
                       tmp_path / "out", prompt="target", progress=False)
    # a: rows 5-14, the first 5 dropped: 100 of 200 px kept (Dice 2*100/300).
    # b: rows 2-7 and 20-34, the first 10 of those 21 rows dropped: the small square goes and
    # 11 of the big square's 15 rows stay, 165 of 261 px (Dice 2*165/426)
    expected = [2 * 100 / 300, 2 * 165 / 426]
    assert summary["dice_mean"] == pytest.approx(np.mean(expected), abs=1e-5)
    assert summary["iou_mean"] == pytest.approx(np.mean([100 / 200, 165 / 261]), abs=1e-5)
    assert summary["gt_empty"]["not_found_accuracy"] == 1.0
    assert summary["hd95_mean"] > 0


def test_text_method_without_prompt_is_refused(tmp_path):
    dataset = open_dataset(make_set(tmp_path / "set"))
    method = Method("text", lambda *a: None, needs_prompt=True)
    with pytest.raises(InputError, match="--prompt"):
        evaluate(dataset, method, tmp_path / "out", progress=False)


def test_rerun_resumes_and_retries_failures(tmp_path, box_segmenter):
    root = make_set(tmp_path / "set")
    out = tmp_path / "out"
    first = Counting(box_segmenter)
    evaluate(open_dataset(root), first.method(), out, limit=2, progress=False)
    assert len(first.seen) == 2 and list(read_rows(out)) == ["a", "b"]
    second = Counting(box_segmenter)
    summary = evaluate(open_dataset(root), second.method(), out, progress=False)
    assert len(second.seen) == 1  # only c is new; d still fails before segmenting
    assert list(read_rows(out)) == ["a", "b", "c", "d"] and summary["n_failed"] == 1
    save(root / "images" / "d.png", np.zeros((40, 50), np.uint8))
    third = Counting(box_segmenter)
    summary = evaluate(open_dataset(root), third.method(), out, progress=False)
    assert len(third.seen) == 1 and summary["n_failed"] == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_out_dir_of_another_run_is_refused(tmp_path, box_segmenter):
    root = make_set(tmp_path / "set")
    evaluate(open_dataset(root), Counting(box_segmenter).method(), tmp_path / "out", limit=1,
             progress=False)
    other = Method("other", lambda *a: None)
    with pytest.raises(InputError, match="another run \\(method: 'gt-box' -> 'other'\\)"):
        evaluate(open_dataset(root), other, tmp_path / "out", progress=False)


def counting_with(segmenter, runtime: str) -> tuple[Counting, Method]:
    """A counting gt-box method whose provenance is that of ``runtime``'s configuration."""
    counting = Counting(segmenter)
    config = RunConfig(method="gt-box", models=ModelConfig(runtime=runtime))
    provenance = run_identity(config, roles=("segmenter",)).describe(segmenter)
    return counting, dataclasses.replace(counting.method(), provenance=provenance)


def test_other_settings_are_refused_naming_them_and_overwrite_starts_over(tmp_path,
                                                                          box_segmenter):
    root, out = make_set(tmp_path / "set"), tmp_path / "out"
    first, method = counting_with(box_segmenter, "onnx")
    evaluate(open_dataset(root), method, out, limit=2, progress=False)
    again, same = counting_with(box_segmenter, "onnx")
    evaluate(open_dataset(root), same, out, limit=2, progress=False)
    assert len(first.seen) == 2 and again.seen == []
    other_counting, other = counting_with(box_segmenter, "torch")
    with pytest.raises(InputError) as info:
        evaluate(open_dataset(root), other, out, limit=2, progress=False)
    message = str(info.value)
    assert "models.runtime: 'onnx' -> 'torch'" in message and "--overwrite" in message
    assert "\n" not in message and other_counting.seen == []
    evaluate(open_dataset(root), other, out, limit=2, progress=False, overwrite=True)
    assert len(other_counting.seen) == 2
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["config.models.runtime"] == "torch"


def test_summary_names_models_subset_failures_and_end_to_end_time(tmp_path, box_segmenter):
    _, method = counting_with(box_segmenter, "torch")
    out = tmp_path / "out"
    start = time.perf_counter()
    summary = evaluate(open_dataset(make_set(tmp_path / "set")), method, out, progress=False,
                       subset="test")
    elapsed = time.perf_counter() - start
    provenance = summary["provenance"]
    assert provenance["settings"] == method.provenance.key
    segmenter = provenance["models"]["segmenter"]
    assert segmenter["name"] == "box-filling" and len(segmenter["files"][0]["sha256"]) == 64
    assert provenance["config"]["models"]["runtime"] == "torch"
    assert set(provenance["versions"]) >= {"clipsam", "torch", "onnxruntime", "numpy",
                                           "transformers"}
    assert summary["subset"] == "test" and "seen_by_text_model" not in summary
    assert summary["n_failed"] == 1 and [f["id"] for f in summary["failed"]] == ["d"]
    assert "d.png" in summary["failed"][0]["error"]
    assert summary["wall_seconds_per_image"] >= summary["seconds_per_image"] > 0
    rows = read_rows(out)
    walls = [float(rows[i]["wall_seconds"]) for i in "abcd"]  # intervals between rows written
    assert sum(walls) >= sum(float(rows[i]["seconds"]) for i in "abc")
    assert min(walls) > 0 and sum(walls) <= elapsed
