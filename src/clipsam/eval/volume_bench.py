"""The volume benchmark's comparison: per volume and overall figures of MedCLIP-SAM slice by
slice, consistent, and ground-truth boxes per slice, read from the three runs' result folders
(:func:`clipsam.eval.volumes.evaluate_volumes`), for scripts/bench_volumes.py and the documents'
tables (scripts/make_tables.py).

Layout of a benchmark folder ``OUT``: ``OUT/<run>/per_volume.csv`` and
``OUT/<run>/summary.json`` for each run of :data:`RUNS` (``run.json`` and ``records/`` beside
them), and the comparison in ``OUT/summary.json`` and ``OUT/table.md``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from clipsam.eval.stats import paired_difference

RUNS = {"slices": ("medclipsam", "slices"), "consistent": ("medclipsam", "consistent"),
        "gt-box": ("gt-box", "slices")}
"""Run folder -> (method, ``--volume-mode``)."""


def _number(text: str) -> float:
    return float(text) if text else math.nan


def read_runs(out: Path) -> tuple[dict, dict] | None:
    """(run -> its summary.json, run -> volume id -> its per_volume.csv row) of the runs in
    ``out``, or None when any of :data:`RUNS` is missing."""
    summaries, rows = {}, {}
    for name in RUNS:
        summary, table = out / name / "summary.json", out / name / "per_volume.csv"
        if not (summary.is_file() and table.is_file()):
            return None
        summaries[name] = json.loads(summary.read_text())
        with table.open(newline="") as handle:
            rows[name] = {row["id"]: row for row in csv.DictReader(handle)}
    return summaries, rows


def compare(summaries: dict, rows: dict, ids: list[str], stored: bool = False) -> dict:
    """Per volume and overall figures of the three runs over the volumes ``ids`` (volumes that
    failed in any run are listed apart): the mean paired Dice difference consistent - slices
    with its 95 % bootstrap interval, and the consistent run's time over the encoder's (the
    encoder seconds of the slices run, which encodes first). ``stored``: the runs read their
    embeddings from a store given beforehand (``--embedding-cache``), so the encoder seconds
    may be reads of stored embeddings, not encoder passes: the time ratio is left out."""
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
    report = {"prompt": summaries["slices"]["prompt"], "n": len(volumes), "stored": stored,
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
        if not stored:
            report["consistent_seconds_over_encoder"] = (encoder + after) / encoder
    return report


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


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
        ratio = report.get("consistent_seconds_over_encoder")
        timing = (f"consistent mode took {ratio:.2f}x the encoder passes" if ratio is not None
                  else "embeddings read from a store made beforehand (--embedding-cache): the "
                       "encoder seconds are reads, not encoder passes")
        lines.append(f"\nConsistent minus slice-by-slice, per-volume Dice, paired over "
                     f"{report['n']} volumes: {difference['mean']:+.3f} (95 % bootstrap "
                     f"interval {low:+.3f} to {high:+.3f}); {timing}.")
    if report["failed"]:
        lines.append(f"\nFailed in at least one run (not in the table): "
                     f"{', '.join(report['failed'])}.")
    return "\n".join(lines)
