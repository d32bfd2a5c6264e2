"""``clipsam adapt``: teach the grounding model a new target from a few labelled images."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "adapt", help="learn a new text target from a few labelled images",
        description="Learn PROMPT from N labelled images of LABELED_DIR (images/, masks/) on "
                    "top of a grounding model (built-in by default) without changing what it "
                    "already knows, and save the result as a model folder usable as "
                    "--text-model. Takes seconds.")
    parser.add_argument("labeled_dir", type=Path, metavar="LABELED_DIR")
    parser.add_argument("--prompt", "-p", required=True, metavar="TEXT")
    parser.add_argument("--shots", type=int, default=5, metavar="N")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR")
    parser.add_argument("--base", type=Path, default=None, metavar="MODEL_DIR",
                        help="grounding model to extend (default: the built-in one)")
    parser.add_argument("--seed", type=int, default=0, help="which labelled images are used")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from clipsam.errors import InputError
    from clipsam.models.grounding import load_grounding_model
    from clipsam.train.adapt import adapt_from_folder

    if args.shots < 1:
        raise InputError(f"--shots must be at least 1, got {args.shots}")
    model = load_grounding_model(args.base)
    adapted, used = adapt_from_folder(model, args.labeled_dir, args.prompt, args.shots, args.seed)
    adapted.save(args.out)
    print(f"learned {args.prompt!r} from {len(used)} images "
          f"({', '.join(s.image_id for s in used)}); saved {args.out}")
    return 0
