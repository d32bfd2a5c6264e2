"""``clipsam adapt``: teach the grounding model a new target from a few labelled images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clipsam.apps.options import add_device, add_runtime, add_threads, positive_int


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
    parser.add_argument("labeled_dir", type=Path, metavar="LABELED_DIR",
                        help="labelled set of the new target: images/ and masks/")
    parser.add_argument("-p", "--prompt", required=True, metavar="TEXT",
                        help="the new target's name, e.g. 'liver tumour'")
    parser.add_argument("--shots", type=positive_int, default=5, metavar="N",
                        help="labelled images learned from, drawn among those with a "
                             "non-empty mask (default %(default)s)")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR",
                        help="folder for the adapted model (use it as --text-model)")
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
    add_runtime(parser, trains=True)
    add_device(parser, trains=True)
    add_threads(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from clipsam.io.labelled_sets import list_samples

    list_samples(args.labeled_dir)  # refuse an unusable folder before loading torch or models
    from clipsam.config import ModelConfig
    from clipsam.models.device import use_torch_threads
    from clipsam.models.grounding import load_grounding_model
    from clipsam.pipelines.registry import load_segmenter
    from clipsam.train.adapt import AdaptConfig, adapt_from_folder, save_adapted

    config = AdaptConfig() if args.views is None else AdaptConfig(views=args.views)
    segmenter = load_segmenter(ModelConfig(runtime=args.runtime, device=args.device,
                                           threads=args.threads))
    use_torch_threads(args.threads)  # the concept is learned in PyTorch, on the CPU
    model = load_grounding_model(args.base, segmenter=segmenter)
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
