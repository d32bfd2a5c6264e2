"""Paraphrase Dice: each wording of the reported half of the paraphrase list against its
concept's trained wording, on the same held-out images, through the product path.

    .venv/bin/python scripts/bench_word_dice.py --data ../shared/data \\
        --embedding-cache runs/embeddings --out docs/results/words/paraphrase_dice

Every wording of the reported half (clipsam/data/paraphrases.json) that names a trained
concept is segmented, with that concept's name, on the held-out ("test" subjects) images of
the concept's set by ``clipsam.api.Segmenter`` (MedCLIP-SAM, one encoder pass per image; with
--embedding-cache the encodings are kept across runs). Writes ``rows.csv`` (one row per image
and wording) and ``summary.json`` (per wording: Dice against the trained wording's on images
with the target; the bar: within 0.02 on average, none below 0.9 of it). Library:
:mod:`clipsam.eval.word_measures`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from clipsam.api import Segmenter, run_config
from clipsam.eval.paraphrases import load_paraphrases
from clipsam.eval.seen import count_seen
from clipsam.eval.word_measures import (
    held_out,
    paraphrase_cases,
    paraphrase_dice_rows,
    summarise_paraphrase_dice,
    write_rows,
)
from clipsam.io.record import write_record_json
from clipsam.train.captions import builtin_concepts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--text-model", default="builtin", metavar="NAME_OR_DIR")
    parser.add_argument("--embedding-cache", type=Path, default=None, metavar="DIR")
    parser.add_argument("--list", type=Path, default=None,
                        help="paraphrase list (default: the shipped one)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only the first N held-out images of each set (a check run)")
    args = parser.parse_args()
    segmenter = Segmenter(run_config("medclipsam", text_model=args.text_model,
                                     embedding_cache=args.embedding_cache))
    set_of = {c.target: name for name, c in builtin_concepts().items()}
    cases = paraphrase_cases(load_paraphrases(args.list), segmenter.concepts())
    concepts = sorted({c.concept for c in cases if c.concept in set_of})
    datasets = {d.name: d for d in held_out(args.data, [set_of[c] for c in concepts])}
    rows, seen = [], {}
    for concept in tqdm(concepts, desc="concepts"):
        dataset = datasets.get(set_of[concept])
        if dataset is None:
            continue
        seen[dataset.name] = count_seen([c.image_path for c in dataset], segmenter.text.metadata)
        rows += paraphrase_dice_rows(segmenter, dataset, concept, cases, args.limit)
    args.out.mkdir(parents=True, exist_ok=True)
    write_rows(args.out / "rows.csv", rows)
    summary = summarise_paraphrase_dice(rows)
    write_record_json(args.out / "summary.json", {
        **summary, "subset": "test", "limit": args.limit, "seen_by_text_model": seen,
        "missing_sets": sorted({set_of[c] for c in concepts} - set(datasets)),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["scripts/bench_word_dice.py", *sys.argv[1:]]),
        "provenance": segmenter.provenance})
    print(f"wrote {args.out}: {summary['n_wordings']} wordings on {summary['n_images']} images "
          f"({summary['n_failed']} failed); mean difference {summary['mean_difference']}, "
          f"worst ratio {summary['worst_ratio']}, bars hold: {summary['bars']['hold']}")


if __name__ == "__main__":
    main()
