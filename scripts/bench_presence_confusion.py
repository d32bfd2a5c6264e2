"""Presence confusion: "what is in this image?" (every trained concept, as ``clipsam segment
--all``) on each set's held-out images; how often each target is reported on each set's images.

    .venv/bin/python scripts/bench_presence_confusion.py --data ../shared/data \\
        --embedding-cache runs/embeddings --out docs/results/words/confusion

Each set's held-out ("test" subjects) images go through ``clipsam.api.Segmenter.segment_all``
(MedCLIP-SAM, one encoder pass per image). Writes ``rows.csv`` (one row per image and concept:
found, presence score, threshold) and ``table.json`` (per set: the share of its images on which
each concept was found, overall and split by whether the image shows the set's own target).
Library: :mod:`clipsam.eval.word_measures`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from clipsam.api import Segmenter, run_config
from clipsam.eval.seen import count_seen
from clipsam.eval.word_measures import confusion_table, held_out, presence_rows, write_rows
from clipsam.io.record import write_record_json
from clipsam.train.captions import builtin_concepts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--text-model", default="builtin", metavar="NAME_OR_DIR")
    parser.add_argument("--embedding-cache", type=Path, default=None, metavar="DIR")
    parser.add_argument("--sets", nargs="*", default=None,
                        help="set folders under --data (default: the built-in training sets)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only the first N held-out images of each set (a check run)")
    args = parser.parse_args()
    segmenter = Segmenter(run_config("medclipsam", text_model=args.text_model,
                                     embedding_cache=args.embedding_cache))
    datasets = held_out(args.data, args.sets or sorted(builtin_concepts()))
    rows = []
    for dataset in tqdm(datasets, desc="sets"):
        rows += presence_rows(segmenter, dataset, args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    write_rows(args.out / "rows.csv", rows)
    table = confusion_table(rows)
    write_record_json(args.out / "table.json", {
        **table, "subset": "test", "limit": args.limit,
        "seen_by_text_model": {
            d.name: count_seen([c.image_path for c in d], segmenter.text.metadata)
            for d in datasets},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["scripts/bench_presence_confusion.py", *sys.argv[1:]]),
        "provenance": segmenter.provenance})
    concepts = table["concepts"]
    print("set | n | " + " | ".join(concepts))
    for name, entry in table["sets"].items():
        cells = [f"{entry['found_rate'][c]:.2f}" if entry["found_rate"][c] is not None else "-"
                 for c in concepts]
        print(f"{name} | {entry['n']} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
