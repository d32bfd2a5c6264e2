"""``clipsam eval``: score a method on a folder of images with reference masks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clipsam.config import DEVICES, RUNTIMES, SEGMENTERS, ModelConfig, RunConfig
from clipsam.eval.methods import METHODS
from clipsam.eval.metrics import DEFAULT_NSD_TOLERANCE_MM


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="score a method on an evaluation set",
        description="Run METHOD on every image of DATA_DIR (images/, masks/, meta.csv) and write "
                    "OUT_DIR/per_image.csv and OUT_DIR/summary.json. Rerunning with the same "
                    "OUT_DIR resumes. Exit code 1 if any image failed.")
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    parser.add_argument("--method", required=True, choices=sorted(METHODS))
    parser.add_argument("--prompt", default="", help="text prompt for text-prompted methods")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only the first N images in sorted order")
    parser.add_argument("--out", type=Path, default=None, metavar="OUT_DIR",
                        help="output folder (default: runs/eval/<set>-<method>)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto")
    parser.add_argument("--segmenter", choices=SEGMENTERS, default="litemedsam")
    parser.add_argument("--text-model", default="builtin", metavar="NAME_OR_DIR")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.add_argument("--model", type=Path, default=None, metavar="MODEL_DIR",
                        help="with --method weak: the folder written by clipsam weak-train")
    parser.add_argument("--subset", choices=("all", "test", "train"), default="all",
                        help="only the held-out ('test') or training subjects of the "
                             "subject-hash split the built-in text model was trained with")
    parser.add_argument("--save-intermediates", action="store_true",
                        help="also write OUT_DIR/intermediates/<id>/ with the overlay and the "
                             "pipeline's views (saliency, coarse mask, proposals, boxes)")
    parser.add_argument("--nsd-tolerance", type=float, default=DEFAULT_NSD_TOLERANCE_MM,
                        metavar="MM", help="NSD boundary tolerance in mm (default %(default)s)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from clipsam.errors import InputError
    from clipsam.eval.dataset import open_dataset
    from clipsam.eval.harness import evaluate
    from clipsam.eval.methods import build_method

    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    dataset = open_dataset(args.data_dir)
    if args.subset != "all":
        from clipsam.eval.dataset import subject_subset

        dataset = subject_subset(dataset, args.subset)
    out_dir = args.out or Path("runs") / "eval" / f"{dataset.name}-{args.method}"
    config = RunConfig(method=args.method, models=ModelConfig(
        segmenter=args.segmenter, runtime=args.runtime, device=args.device,
        text_model=args.text_model, weights_dir=args.weights_dir),
        weak_model=args.model, keep_intermediates=args.save_intermediates)
    method = build_method(args.method, config)
    summary = evaluate(dataset, method, out_dir, prompt=args.prompt, limit=args.limit,
                       tolerance_mm=args.nsd_tolerance, progress=not args.quiet,
                       save_intermediates=args.save_intermediates)
    failed = summary["failed"]
    if summary["n_images"] == 1 and failed:
        print(f"error: {failed[0]['id']}: {failed[0]['error']}", file=sys.stderr)
        return 1
    print(_summary_line(summary))
    print(f"results in {out_dir}")
    for failure in failed:
        print(f"failed: {failure['id']}: {failure['error']}", file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} of {summary['n_images']} images failed", file=sys.stderr)
        return 1
    return 0


def _summary_line(summary: dict) -> str:
    def show(key: str) -> str:
        value = summary.get(key)
        return "-" if value is None else f"{value:.3f}"

    empty = summary["gt_empty"]
    text = (f"{summary['method']} on {summary['dataset']}: n={summary['n']} "
            f"dice={show('dice_mean')} (median {show('dice_median')}) iou={show('iou_mean')} "
            f"hd95={show('hd95_mean')} nsd={show('nsd_mean')} "
            f"s/image={show('seconds_per_image')}")
    if empty["n"]:
        accuracy = empty["not_found_accuracy"]
        text += (f"; {empty['n']} empty-reference images"
                 + ("" if accuracy is None else f", not-found accuracy {accuracy:.3f}"))
    return text
