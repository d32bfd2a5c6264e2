"""The presence curve of every trained target on each set's held-out images: recall against
"not found" on images without the target, over a sweep of thresholds, with the model's
operating points (recall, balanced, precision) marked.

    .venv/bin/python scripts/presence_curve.py --data ../shared/data \\
        --embedding-cache runs/embeddings --out docs/results/presence_curve

Each set's held-out ("test" subjects) images go through ``clipsam.api.Segmenter.segment_all``
(MedCLIP-SAM, one encoder pass per image, every concept's presence score). A target's images
with it are its own set's images with a mask; those without it are its own set's empty images
and every other set's images, leaving out sets where it may be visible or is always shown
(the concepts table); each group's "not found" rate is reported, and their mean. Writes
``rows.csv`` (one row per image and concept), ``curve.csv`` (one row per target and threshold;
``point`` names the operating points) and ``summary.json`` (per target: counts, AUC, the
operating points' figures; provenance). Library: :mod:`clipsam.eval.presence`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from clipsam.api import Segmenter, run_config
from clipsam.eval.presence import logit_grid, presence_curves
from clipsam.eval.seen import count_seen
from clipsam.eval.word_measures import held_out, presence_rows, write_rows
from clipsam.io.record import write_record_json
from clipsam.train.captions import builtin_concepts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/results/presence_curve"))
    parser.add_argument("--text-model", default="builtin", metavar="NAME_OR_DIR")
    parser.add_argument("--embedding-cache", type=Path, default=None, metavar="DIR")
    parser.add_argument("--sets", nargs="*", default=None,
                        help="set folders under --data (default: the built-in training sets)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only the first N held-out images of each set (a check run)")
    args = parser.parse_args()
    segmenter = Segmenter(run_config("medclipsam", text_model=args.text_model,
                                     embedding_cache=args.embedding_cache))
    concepts = builtin_concepts()
    datasets = held_out(args.data, args.sets or sorted(concepts))
    rows = []
    for dataset in tqdm(datasets, desc="sets"):
        rows += presence_rows(segmenter, dataset, args.limit)
    model = segmenter.text
    points = {c: model.operating_points(c) for c in segmenter.concepts()}
    curve, summary = presence_curves(rows, {d.name: concepts[d.name] for d in datasets},
                                     points, logit_grid())
    args.out.mkdir(parents=True, exist_ok=True)
    write_rows(args.out / "rows.csv", rows)
    write_rows(args.out / "curve.csv", curve)
    write_record_json(args.out / "summary.json", {
        "targets": summary, "subset": "test", "limit": args.limit,
        "n_failed": sum(bool(r.get("error")) for r in rows),
        "seen_by_text_model": {d.name: count_seen([c.image_path for c in d], model.metadata)
                               for d in datasets},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["scripts/presence_curve.py", *sys.argv[1:]]),
        "provenance": segmenter.provenance})
    print("target | with | empty | other | AUC | " + " | ".join(
        f"{p}: thr, recall, not found empty/other" for p in ("recall", "balanced", "precision")))
    for target, entry in summary.items():
        cells = []
        for p in ("recall", "balanced", "precision"):
            q = entry["points"].get(p)
            cells.append("-" if q is None else
                         f"{q['threshold']:.3f}, {_show(q['recall'])}, "
                         f"{_show(q['not_found_empty'])}/{_show(q['not_found_other_sets'])}")
        print(f"{target} | {entry['n_present']} | {entry['n_empty']} | {entry['n_other_sets']} "
              f"| {_show(entry['auc'])} | " + " | ".join(cells))


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
