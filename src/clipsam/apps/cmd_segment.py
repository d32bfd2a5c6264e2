"""``clipsam segment``: segment files, folders or globs for one or more text prompts."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from clipsam.apps.options import add_presence, add_threads
from clipsam.config import DEVICES, RUNTIMES, SEGMENTERS
from clipsam.errors import ClipsamError, InputError, require
from clipsam.pipelines.registry import PIPELINES

if TYPE_CHECKING:  # the parser is built for every command: model code loads in run()
    from clipsam.apps.batch import InputImage, Summary

OUTPUT_FORMATS = ("mask", "dicom-seg")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment", help="segment images for text prompts",
        description="Segment every image in INPUT (files, folders, globs) for each prompt and write"
                    " <name>_mask.png (or .nii.gz), <name>_overlay.png and <name>.json to OUT_DIR. "
                    "A prompt reaches the model's trained concept it means (plurals, synonyms...; "
                    "the record says which, with its similarity); one that reaches none is "
                    "segmented by its own words, with a note. --all looks for every trained and "
                    "adapted concept (what is in this image?) and writes the masks of those found. "
                    "A folder holding the slices of one DICOM series is read as one volume. "
                    "--method weak (and weak-box) also writes <name>_uncertainty.tif (.nii.gz for "
                    "volumes), the network's per-pixel predictive entropy in bits. Images already "
                    "done with the same settings (method, models and their files, configuration, "
                    "clipsam version) are skipped unless --overwrite; images done with other "
                    "settings are redone.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT")
    targets = parser.add_mutually_exclusive_group(required=True)
    targets.add_argument("-p", "--prompt", dest="prompts", action="append", metavar="TEXT",
                         help="what to segment; repeat for several targets")
    targets.add_argument("--all", dest="all_concepts", action="store_true",
                         help="every trained and adapted concept of the text model, from one "
                              "encoder pass per image: those found, with their presence scores")
    parser.add_argument("-o", "--out", dest="out_dir", type=Path, required=True,
                        metavar="OUT_DIR")
    parser.add_argument("--method", choices=sorted(PIPELINES), default="medclipsam")
    parser.add_argument("--model", type=Path, default=None, metavar="MODEL_DIR",
                        help="with --method weak or weak-box: the folder written by clipsam "
                             "weak-train")
    parser.add_argument("--segmenter", choices=SEGMENTERS, default="litemedsam")
    parser.add_argument("--text-model", default="builtin", metavar="DIR",
                        help="'builtin', a fine-tuned/adapted model folder or a CLIP name")
    add_presence(parser)
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    add_threads(parser)
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.add_argument("--overwrite", action="store_true", help="redo images already done")
    parser.add_argument("--num-parts", type=int, default=1, metavar="N")
    parser.add_argument("--part-id", type=int, default=0, metavar="I",
                        help="run only part I (0-based) of N interleaved parts")
    parser.add_argument("--output-format", choices=OUTPUT_FORMATS, default="mask",
                        help="mask: PNG or NIfTI masks; dicom-seg: also <name>_seg.dcm, a DICOM "
                             "Segmentation with one segment per prompt over the DICOM input "
                             "(needs the extra clipsam[dicom])")
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="an existing Ray cluster (default: start a local one)")
    parser.add_argument("--workers", type=int, default=None,
                        help="Ray actors, each with its own models (default: CPUs / 2)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the job; 0 when every image succeeded, 1 if any failed, 2 for unusable arguments."""
    from clipsam.api import Segmenter, run_config
    from clipsam.apps.batch import SegmentJob, collect_inputs, run_local, select_part
    from clipsam.pipelines.prompts import validate_prompt
    from clipsam.pipelines.provenance import run_identity
    from clipsam.pipelines.registry import method_spec

    try:
        prompts = tuple(dict.fromkeys(validate_prompt(p) for p in args.prompts or ()))
        # a trained network's uncertainty map is written beside the mask
        weak = method_spec(args.method).own_model
        config = run_config(args.method, segmenter=args.segmenter, text_model=args.text_model,
                            runtime=args.runtime, device=args.device, threads=args.threads,
                            keep_intermediates=weak, presence=args.presence,
                            weights_dir=args.weights_dir, weak_model=args.model)
        if args.engine == "ray":
            require("ray", "--engine ray")
        dicom_seg = args.output_format == "dicom-seg"
        if dicom_seg and args.all_concepts:
            raise InputError("--output-format dicom-seg needs the prompts to segment; --all "
                             "finds a different set of targets in each image")
        if dicom_seg:
            require("dicom", "--output-format dicom-seg")
        settings = run_identity(config).key
        items = collect_inputs(args.inputs, out_dir=args.out_dir)
        items = select_part(items, args.num_parts, args.part_id)
        if dicom_seg:
            check_dicom_inputs(items)
    except ClipsamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    job = SegmentJob(prompts=prompts, out_dir=args.out_dir, settings=settings,
                     overwrite=args.overwrite, dicom_seg=dicom_seg, uncertainty=weak,
                     all_concepts=args.all_concepts)
    try:
        if args.engine == "ray":
            from clipsam.apps.ray_engine import run_ray

            summary = run_ray(items, job, config, address=args.ray_address,
                              workers=args.workers)
        else:
            quiet = getattr(args, "quiet", 0) > 0
            summary = run_local(items, job, functools.partial(Segmenter, config),
                                progress=None if quiet else _progress_bar)
    except ClipsamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report(summary, single=len(items) == 1)
    return 1 if summary.failed else 0


def check_dicom_inputs(items: Sequence[InputImage]) -> None:
    """Refuse a DICOM SEG job with an input that is not DICOM (a file or series folder)."""
    from clipsam.io.read import detect_format

    for item in items:
        if not item.path.is_dir() and (kind := detect_format(item.path)) != "dicom":
            raise InputError(f"--output-format dicom-seg needs DICOM input; {item.path} is {kind}")


def report(summary: Summary, single: bool) -> None:
    """A single failed file gets its one error line; a folder run gets the summary too."""
    lines = summary.lines()
    if single and summary.failed:
        lines = lines[:1]
    for line in lines:
        print(line, file=sys.stderr if line.startswith("error:") else sys.stdout)


def _progress_bar(items, total: int):
    from clipsam.io.progress import progress_bar

    return progress_bar(items, total, "segment")
