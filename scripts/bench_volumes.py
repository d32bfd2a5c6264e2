"""Volumes: per-volume 3-D Dice of slice-by-slice, consistent and ground-truth boxes per slice on
the patients the text model never trained on, with slice detection and time per volume.

    .venv/bin/python scripts/bench_volumes.py ../shared/data/lgg_volumes --prompt "brain tumour" \\
        --voxel-units

Scores the test part of the subject split (:func:`clipsam.io.splits.split_of`; refused when
the text model lists any of these patients among its training or calibration subjects, in any
set) three times with :func:`clipsam.eval.volumes.evaluate_volumes`: MedCLIP-SAM with
``--volume-mode slices`` and ``consistent`` (its calibrated settings, from
scripts/calibrate_volumes.py on the train part) and ``gt-box`` per slice (the bound). Results go
to OUT/{slices,consistent,gt-box}/ (per_volume.csv, summary.json, run.json, records/) and
OUT/summary.json + OUT/table.md: per volume the three Dice, slice-detection precision and
recall, the encoder seconds and each mode's seconds after the encoder; the mean paired
difference consistent - slices with its 95 % bootstrap interval. The three runs share an
embedding cache (a fresh temporary folder unless ``--embedding-cache``), so each slice is
encoded once: the slices run, first, measures the encoder. ``--voxel-units`` reports volumes
in voxels (lgg_volumes: the source gives no spacing). Reruns resume each run.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from clipsam.config import ModelConfig, RunConfig, VolumeConfig
from clipsam.eval.dataset import open_dataset, subject_subset
from clipsam.eval.methods import build_method
from clipsam.eval.seen import count_seen_volumes
from clipsam.eval.stats import paired_difference
from clipsam.eval.volumes import evaluate_volumes
from clipsam.io.atomic import write_text_atomic
from clipsam.pipelines.registry import grounding_metadata

RUNS = {"slices": ("medclipsam", "slices"), "consistent": ("medclipsam", "consistent"),
        "gt-box": ("gt-box", "slices")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a set of volumes (images/, masks/, meta.csv)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/results/volumes"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N volumes")
    parser.add_argument("--text-model", default="builtin")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--voxel-units", action="store_true")
    parser.add_argument("--embedding-cache", type=Path, default=None, metavar="DIR")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()

    dataset = subject_subset(open_dataset(args.data), "test")
    models = ModelConfig(text_model=args.text_model, runtime=args.runtime)
    seen = count_seen_volumes(dataset, grounding_metadata(models) or {})
    if seen:
        sys.exit(f"the text model was trained or calibrated on {seen} of these patients")
    with tempfile.TemporaryDirectory() as scratch:
        cache = args.embedding_cache or Path(scratch)
        summaries, rows = {}, {}
        for name, (method, mode) in RUNS.items():
            config = RunConfig(method=method, volume=VolumeConfig(mode=mode),
                               models=ModelConfig(text_model=args.text_model,
                                                  runtime=args.runtime, embedding_cache=cache))
            summaries[name] = evaluate_volumes(
                dataset, build_method(method, config), args.out / name, args.prompt,
                limit=args.limit, progress=not args.quiet, subset="test",
                seen_by_text_model=seen, voxel_units=args.voxel_units)
            with (args.out / name / "per_volume.csv").open(newline="") as handle:
                rows[name] = {row["id"]: row for row in csv.DictReader(handle)}
    report = compare(summaries, rows, [c.id for c in dataset.cases[:args.limit]])
    write_text_atomic(args.out / "summary.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(args.out / "table.md", table(report) + "\n")
    print(table(report))


def _number(text: str) -> float:
    return float(text) if text else float("nan")


def compare(summaries: dict, rows: dict, ids: list[str]) -> dict:
    """Per volume and overall figures of the three runs (volumes that failed in any are
    listed apart)."""
    ok = [i for i in ids if all(i in rows[n] and not rows[n][i]["error"] for n in RUNS)]
    volumes = []
    for volume_id in ok:
        entry = {"id": volume_id, "n_slices": int(rows["slices"][volume_id]["slices"]),
                 "n_slices_ref": int(rows["slices"][volume_id]["slices_ref"]),
                 "encoder_seconds": _number(rows["slices"][volume_id]["encode_seconds"])}
        for name in RUNS:
            row = rows[name][volume_id]
            entry[name] = {key: _number(row[key]) for key in (
                "dice", "slice_precision", "slice_recall", "volume_error")}
            entry[name]["seconds_after_encoder"] = (_number(row["seconds"])
                                                    - _number(row["encode_seconds"] or "0"))
        volumes.append(entry)
    report = {"prompt": summaries["slices"]["prompt"], "n": len(volumes),
              "failed": sorted(set(ids) - set(ok)), "volumes": volumes,
              "runs": {name: {key: summaries[name].get(key) for key in (
                  "dice_mean", "slice_precision_pooled", "slice_recall_pooled",
                  "volume_error_mean", "volume_unit", "seconds_per_volume",
                  "encode_seconds_per_volume")} for name in RUNS}}
    if volumes:
        mean, low, high = paired_difference([v["consistent"]["dice"] for v in volumes],
                                            [v["slices"]["dice"] for v in volumes])
        encoder = sum(v["encoder_seconds"] for v in volumes)
        after = sum(v["consistent"]["seconds_after_encoder"] for v in volumes)
        report["consistent_minus_slices"] = {"mean": mean, "ci95": [low, high]}
        report["consistent_seconds_over_encoder"] = (encoder + after) / encoder
    return report


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def table(report: dict) -> str:
    """The per-volume table and the paired difference, in markdown."""
    lines = ["| volume | slices (with target) | Dice slices | Dice consistent | Dice gt-box | "
             "slice P / R slices | slice P / R consistent | encoder s | after encoder s "
             "slices / consistent |", "|---|---|---|---|---|---|---|---|---|"]
    for v in report["volumes"]:
        s, c, g = v["slices"], v["consistent"], v["gt-box"]
        lines.append(
            f"| {v['id']} | {v['n_slices']} ({v['n_slices_ref']}) | {_fmt(s['dice'])} | "
            f"{_fmt(c['dice'])} | {_fmt(g['dice'])} | {_fmt(s['slice_precision'], 2)} / "
            f"{_fmt(s['slice_recall'], 2)} | {_fmt(c['slice_precision'], 2)} / "
            f"{_fmt(c['slice_recall'], 2)} | {_fmt(v['encoder_seconds'], 1)} | "
            f"{_fmt(s['seconds_after_encoder'], 2)} / {_fmt(c['seconds_after_encoder'], 2)} |")
    runs = report["runs"]
    lines.append(f"| mean | | {_fmt(runs['slices']['dice_mean'])} | "
                 f"{_fmt(runs['consistent']['dice_mean'])} | {_fmt(runs['gt-box']['dice_mean'])}"
                 f" | {_fmt(runs['slices']['slice_precision_pooled'], 2)} / "
                 f"{_fmt(runs['slices']['slice_recall_pooled'], 2)} (pooled) | "
                 f"{_fmt(runs['consistent']['slice_precision_pooled'], 2)} / "
                 f"{_fmt(runs['consistent']['slice_recall_pooled'], 2)} (pooled) | | |")
    difference = report.get("consistent_minus_slices")
    if difference:
        low, high = difference["ci95"]
        lines.append(f"\nConsistent minus slice-by-slice, per-volume Dice, paired over "
                     f"{report['n']} volumes: {difference['mean']:+.3f} (95 % bootstrap "
                     f"interval {low:+.3f} to {high:+.3f}); consistent mode took "
                     f"{report['consistent_seconds_over_encoder']:.2f}x the encoder passes.")
    if report["failed"]:
        lines.append(f"\nFailed in at least one run (not in the table): "
                     f"{', '.join(report['failed'])}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
