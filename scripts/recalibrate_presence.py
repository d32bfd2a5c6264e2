"""Recalibrate a grounding model's "not found" operating points without retraining its heads.

    .venv/bin/python scripts/recalibrate_presence.py builtin --data ../shared/data \\
        --embedding-cache runs/embeddings --out runs/recalibrated [--presence-head]

Reads the model's recorded calibration subjects (and, with --presence-head, its training
subjects) from the set folders under --data, takes their embeddings from --embedding-cache
(encoding the missing ones unless --cached-only), calibrates every operating point (recall,
balanced, precision) and, with --presence-head, fits an image-level presence head per concept
and keeps it where it separates the calibration subjects better than the map. Writes a model
folder to --out (the source's other files copied) and prints each concept's thresholds. A thin
CLI over :mod:`clipsam.train.recalibrate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clipsam.config import RUNTIMES, ModelConfig
from clipsam.models.grounding import builtin_model_dir, load_grounding_model
from clipsam.pipelines.registry import HEADS_SEGMENTER, load_segmenter
from clipsam.train.presence_head import PresenceHeadConfig
from clipsam.train.recalibrate import recalibrate_presence, save_recalibrated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", metavar="MODEL_DIR", help="a model folder, or 'builtin'")
    parser.add_argument("--data", type=Path, required=True, metavar="DIR",
                        help="the folder holding the model's set folders")
    parser.add_argument("--embedding-cache", type=Path, required=True, metavar="DIR")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR")
    parser.add_argument("--presence-head", action="store_true",
                        help="also fit image-level presence heads on the training subjects")
    parser.add_argument("--cached-only", action="store_true",
                        help="refuse to encode images missing from the embedding cache")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto")
    args = parser.parse_args()
    source = builtin_model_dir() if args.model == "builtin" else Path(args.model)
    model = load_grounding_model(source)
    segmenter = load_segmenter(ModelConfig(
        segmenter=model.metadata.get("segmenter", HEADS_SEGMENTER), runtime=args.runtime,
        embedding_cache=args.embedding_cache))
    result = recalibrate_presence(
        model, args.data, segmenter.store, None if args.cached_only else segmenter,
        presence_head=PresenceHeadConfig() if args.presence_head else None)
    save_recalibrated(result.model, source, args.out)
    print("concept | statistic | recall (before) | recall | balanced | precision")
    for concept, c in result.changes.items():
        cells = [f"{c[p]:.4f}" if c.get(p) is not None else "-"
                 for p in ("recall_before", "recall", "balanced", "precision")]
        print(f"{concept} | {c['statistic']} | " + " | ".join(cells))
    for warning in result.model.metadata["recalibrated"][-1]["warnings"]:
        print(f"warning: {warning}")
    print(f"saved {args.out}; use it with --text-model {args.out}")


if __name__ == "__main__":
    main()
