"""``clipsam adapt``: teach the grounding model a new target from a few labelled images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "adapt", help="learn a new text target from a few labelled images",
        description="Learn PROMPT from N labelled images of LABELED_DIR (images/, masks/) on "
                    "top of a grounding model (built-in by default) without changing what it "
                    "already knows: a concept vector and a linear probe on the encoder features "
                    "(learned against half of the model's bank of training images), its own "
                    "'not found' threshold (left-out shots against images without the target: "
                    "--negatives and the bank's other half) and its mask source. Saves a model "
                    "folder usable as --text-model. Takes seconds to a minute.")
    parser.add_argument("labeled_dir", type=Path, metavar="LABELED_DIR")
    parser.add_argument("--prompt", "-p", required=True, metavar="TEXT")
    parser.add_argument("--shots", type=int, default=5, metavar="N")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR")
    parser.add_argument("--base", type=Path, default=None, metavar="MODEL_DIR",
                        help="grounding model to extend (default: the built-in one)")
    parser.add_argument("--negatives", type=Path, default=None, metavar="DIR",
                        help="images without the target (any layout), to set the 'not found' "
                             "threshold together with half of the model's bank of training images")
    parser.add_argument("--seed", type=int, default=0, help="which labelled images are used")
    parser.add_argument("--views", type=int, default=None, metavar="N",
                        help="augmented copies of every labelled image (a crop, a gamma and "
                             "noise), encoded and learned from beside it (default: "
                             "AdaptConfig.views)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from clipsam.errors import InputError
    from clipsam.models.grounding import load_grounding_model
    from clipsam.train.adapt import AdaptConfig, adapt_from_folder, save_adapted

    if args.shots < 1:
        raise InputError(f"--shots must be at least 1, got {args.shots}")
    config = AdaptConfig() if args.views is None else AdaptConfig(views=args.views)
    model = load_grounding_model(args.base)
    adapted, used, report = adapt_from_folder(model, args.labeled_dir, args.prompt, args.shots,
                                              args.seed, args.negatives, config)
    save_adapted(adapted, args.out)
    for warning in report.warnings:
        print(f"warning: {warning}")
    summary = report.to_dict()
    print(f"learned {args.prompt!r} from {len(used)} images "
          f"({', '.join(s.image_id for s in used)}): 'not found' below "
          f"{report.threshold:.3f}, mask from the {report.mask_source}; negatives "
          f"{json.dumps(summary['negatives'])}; saved {args.out}")
    return 0
