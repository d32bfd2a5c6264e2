"""What limits box-anchored decoding on the lesion sets: per held-out image of the product path
(MedCLIP-SAM with the built-in model), the share of the target inside the map's box prompts,
the box-anchored ceiling and the segmenter's predicted IoU against the true IoU; a figure of
each set's worst images.

    .venv/bin/python scripts/lesion_limits.py --data ../shared/data \\
        --embedding-cache runs/eval_emb --out docs/results/lesions/limits

Writes ``rows.csv`` (one row per image with a target), ``summary.json`` (per set, see
:func:`clipsam.eval.lesion_limits.summarise_limits`; with the command, date and provenance)
and ``worst.png`` (each set's ``--worst`` lowest-Dice images: reference outline yellow, answer
green, box prompts red). Library: :mod:`clipsam.eval.lesion_limits`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from clipsam.api import Segmenter, run_config
from clipsam.eval.lesion_limits import limit_row, summarise_limits
from clipsam.eval.seen import count_seen
from clipsam.eval.word_measures import held_out, write_rows
from clipsam.io.image import segmenter_input
from clipsam.io.masks import read_mask
from clipsam.io.overlay import case_picture, write_sheet_png
from clipsam.io.read import read_image
from clipsam.io.record import write_record_json

PROMPTS = {"kvasir_polyp": "polyp", "busi": "breast tumour", "lgg_flair": "brain tumour"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--embedding-cache", type=Path, default=None, metavar="DIR")
    parser.add_argument("--worst", type=int, default=4, metavar="N",
                        help="images per set in the figure (default: %(default)s)")
    args = parser.parse_args()
    segmenter = Segmenter(run_config("medclipsam", embedding_cache=args.embedding_cache))
    rows, answers, seen = [], {}, {}  # the worst images are read again for the figure
    for dataset in held_out(args.data, PROMPTS):
        prompt = PROMPTS[dataset.name]
        seen[dataset.name] = count_seen([c.image_path for c in dataset], segmenter.text.metadata)
        for case in tqdm(dataset.cases, desc=dataset.name):
            reference = read_mask(case.mask_path)
            if not reference.any():
                continue
            image = read_image(case.image_path)
            (result,) = segmenter.segment(image, prompt)
            rows.append(limit_row(dataset.name, case.id, result.mask, result.boxes,
                                  result.scores, reference, result.found))
            answers[(dataset.name, case.id)] = (case.image_path, result, reference)
    args.out.mkdir(parents=True, exist_ok=True)
    write_rows(args.out / "rows.csv", [r.record() for r in rows])
    summary = summarise_limits(rows)
    tiles, captions = [], []
    for name in summary:
        worst = sorted((r for r in rows if r.set == name), key=lambda r: r.dice)[:args.worst]
        for row in worst:
            path, result, reference = answers[(name, row.id)]
            tiles.append(case_picture(segmenter_input(read_image(path)), result.mask, reference,
                                      result.boxes))
            captions.append(f"{name} {row.id[:18]} Dice {row.dice:.2f} in {row.inside:.2f}")
    write_sheet_png(args.out / "worst.png", tiles, captions, columns=args.worst)
    write_record_json(args.out / "summary.json", {
        "sets": summary, "subset": "test", "seen_by_text_model": seen,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["scripts/lesion_limits.py", *sys.argv[1:]]),
        "provenance": segmenter.provenance})
    for name, entry in summary.items():
        print(f"{name}: Dice {entry['dice']}, box-anchored ceiling {entry['ceiling']}, "
              f"IoU prediction Spearman {entry['iou_spearman']}")


if __name__ == "__main__":
    main()
