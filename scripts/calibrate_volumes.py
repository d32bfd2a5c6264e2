"""Calibrate a grounding model's volume settings on development volumes and record them in its
config.json (the ``volume`` block and ``metadata.calibration.volume``).

    .venv/bin/python scripts/calibrate_volumes.py ../shared/data/lgg_volumes \\
        --model src/clipsam/data/grounding --prompt "brain tumour" --embedding-cache runs/emb-vol

The volumes are the train part of the subject split (:func:`clipsam.io.splits.split_of`): the
patients the volume benchmark (scripts/bench_volumes.py, test part) never scores. Each volume
is streamed once through MedCLIP-SAM with the model, every candidate setting is scored on it
(:mod:`clipsam.train.volume_calibration`), and the settings are chosen group by group. A run
with ``--limit`` or ``--dry-run`` prints the report and writes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clipsam.config import ModelConfig, RunConfig
from clipsam.eval.dataset import open_dataset, subject_subset, subjects_of
from clipsam.eval.volumes import load_volume
from clipsam.models.grounding.model import save_volume_settings
from clipsam.pipelines.provenance import run_identity
from clipsam.pipelines.registry import build_pipeline, load_method_models
from clipsam.train.volume_calibration import calibrate_volumes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a set of volumes (images/, masks/, meta.csv)")
    parser.add_argument("--model", type=Path, required=True,
                        help="the grounding model folder to calibrate (its config.json is "
                             "updated)")
    parser.add_argument("--prompt", required=True, help="the target the volumes' masks show")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N train-part volumes (a check: writes nothing)")
    parser.add_argument("--dry-run", action="store_true", help="print, write nothing")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--embedding-cache", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()

    dataset = subject_subset(open_dataset(args.data), "train")
    cases = dataset.cases[:args.limit]
    config = RunConfig(method="medclipsam", models=ModelConfig(
        text_model=str(args.model), runtime=args.runtime, embedding_cache=args.embedding_cache))
    identity = run_identity(config)
    models = load_method_models(identity.config)
    pipeline = build_pipeline(identity.config, models)
    volumes = ((case.id, loaded.image, loaded.mask)
               for case in cases for loaded in [load_volume(case)])
    settings, report = calibrate_volumes(pipeline, models.segmenter, volumes, args.prompt,
                                         progress=lambda name: print(f"calibrated on {name}"))
    subjects = subjects_of(dataset)
    report = {"data": dataset.name, "part": "train", "method": "medclipsam",
              "segmenter": identity.config.models.segmenter,
              "subjects": sorted({subjects[case.id] for case in cases}), **report}
    print(json.dumps(report, indent=1))
    if args.limit is None and not args.dry_run:
        print(f"wrote {save_volume_settings(args.model, settings, report)}")


if __name__ == "__main__":
    main()
