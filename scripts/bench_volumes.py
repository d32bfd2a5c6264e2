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
encoded once: the slices run, first, measures the encoder (with ``--embedding-cache`` the
slices may come from the store, so the time ratio is left out: time a run without it).
``--voxel-units`` reports volumes in voxels (lgg_volumes: the source gives no spacing).
Reruns resume each run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from clipsam.config import ModelConfig, RunConfig, VolumeConfig
from clipsam.eval.dataset import open_dataset, subject_subset
from clipsam.eval.methods import build_method
from clipsam.eval.seen import count_seen_volumes
from clipsam.eval.volume_bench import RUNS, compare, read_runs, table
from clipsam.eval.volumes import evaluate_volumes
from clipsam.io.atomic import write_text_atomic
from clipsam.pipelines.registry import grounding_metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a set of volumes (images/, masks/, meta.csv)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/results/volumes/builtin"))
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
        for name, (method, mode) in RUNS.items():
            config = RunConfig(method=method, volume=VolumeConfig(mode=mode),
                               models=ModelConfig(text_model=args.text_model,
                                                  runtime=args.runtime, embedding_cache=cache))
            evaluate_volumes(
                dataset, build_method(method, config), args.out / name, args.prompt,
                limit=args.limit, progress=not args.quiet, subset="test",
                seen_by_text_model=seen, voxel_units=args.voxel_units)
    summaries, rows = read_runs(args.out)
    report = compare(summaries, rows, [c.id for c in dataset.cases[:args.limit]],
                     stored=args.embedding_cache is not None)
    write_text_atomic(args.out / "summary.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(args.out / "table.md", table(report) + "\n")
    print(table(report))


if __name__ == "__main__":
    main()
