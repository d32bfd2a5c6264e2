"""``clipsam segment``: segment files, folders or globs for one or more text prompts."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from clipsam.apps.options import (
    add_decoding,
    add_device,
    add_presence,
    add_runtime,
    add_segmenter,
    add_text_model,
    add_threads,
    add_volume,
    add_weights_dir,
    check_model_option,
    decoding_config,
    positive_int,
    volume_config,
)
from clipsam.errors import InputError, require
from clipsam.pipelines.registry import PIPELINES

if TYPE_CHECKING:  # the parser is built for every command: model code loads in run()
    from clipsam.apps.batch import InputImage, Summary

OUTPUT_FORMATS = ("mask", "dicom-seg")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment", help="segment images for text prompts",
        description="Segment every image in INPUT (files, folders, globs) for each prompt and "
                    "write <name>_mask.png (or .nii.gz), <name>_overlay.png and <name>.json to "
                    "OUT_DIR. A prompt reaches the model's trained concept it means (plurals, "
                    "synonyms...; the record says which, with its similarity); one that reaches "
                    "none is segmented by its own words, with a note. --all looks for every "
                    "trained and adapted concept (what is in this image?) and writes the masks "
                    "of those found. A folder holding the slices of one DICOM series is read as "
                    "one volume; a volume's record gives each target's volume (mL when the file "
                    "gives the voxel size) and <name>_slices.png shows the slices that hold it. "
                    "--method weak (and weak-box) also writes "
                    "<name>_uncertainty.tif (.nii.gz for volumes), the network's per-pixel "
                    "predictive entropy in bits. Images already done with the same settings "
                    "(method, models and their files, configuration, clipsam version) are "
                    "skipped unless --overwrite; images done with other settings are redone.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files (PNG, JPEG, TIFF, DICOM, NIfTI), folders (searched "
                             "recursively) or glob patterns")
    targets = parser.add_mutually_exclusive_group(required=True)
    targets.add_argument("-p", "--prompt", dest="prompts", action="append", metavar="TEXT",
                         help="what to segment; repeat for several targets")
    targets.add_argument("--all", dest="all_concepts", action="store_true",
                         help="every trained and adapted concept of the text model, from one "
                              "encoder pass per image: those found, with their presence scores")
    parser.add_argument("-o", "--out", dest="out_dir", type=Path, required=True,
                        metavar="OUT_DIR", help="folder for the masks, overlays and records "
                                                "(files inside it are never taken as input)")
    parser.add_argument("--method", choices=sorted(PIPELINES), default="medclipsam",
                        help="method to run (default %(default)s; the README's 'What you get' "
                             "says what each does)")
    parser.add_argument("--model", type=Path, default=None, metavar="MODEL_DIR",
                        help="with --method weak or weak-box: the folder written by clipsam "
                             "weak-train")
    add_segmenter(parser)
    add_text_model(parser)
    add_presence(parser)
    add_decoding(parser)
    add_runtime(parser)
    add_device(parser)
    add_threads(parser)
    add_weights_dir(parser)
    parser.add_argument("--overwrite", action="store_true", help="redo images already done")
    parser.add_argument("--num-parts", type=int, default=1, metavar="N",
                        help="split the inputs into N interleaved parts (with --part-id, to "
                             "spread one job over several processes or machines; default 1)")
    parser.add_argument("--part-id", type=int, default=0, metavar="I",
                        help="run only part I (0-based) of N interleaved parts")
    parser.add_argument("--output-format", choices=OUTPUT_FORMATS, default="mask",
                        help="mask: PNG or NIfTI masks; dicom-seg: also <name>_seg.dcm, a DICOM "
                             "Segmentation with one segment per prompt over the DICOM input "
                             "(needs the extra clipsam[dicom])")
    add_volume(parser)
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this process, reading and writing in background threads "
                             "(default); ray: Ray Data actors, one task per file or volume "
                             "(needs the extra clipsam[ray])")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="with --engine ray: an existing Ray cluster (default: start a "
                             "local one for the run)")
    parser.add_argument("--workers", type=positive_int, default=None, metavar="N",
                        help="with --engine ray: N actors, each loading its own models and "
                             "taking one CPU of Ray's (default: one per CPU the Ray cluster "
                             "offers, at most one per image)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the job; 0 when every image succeeded, 1 if any failed (an unusable argument, input
    or model raises: :func:`clipsam.apps.cli.main` reports it, exit code 2)."""
    from clipsam.api import Segmenter, run_config
    from clipsam.apps.batch import SegmentJob, collect_inputs, run_local, select_part
    from clipsam.pipelines.prompts import validate_prompt
    from clipsam.pipelines.provenance import run_identity
    from clipsam.pipelines.registry import method_spec, weak_model_warning

    check_model_option(args.method, args.model)
    prompts = tuple(dict.fromkeys(validate_prompt(p) for p in args.prompts or ()))
    # a trained network's uncertainty map is written beside the mask
    weak = method_spec(args.method).own_model
    config = run_config(args.method, segmenter=args.segmenter, text_model=args.text_model,
                        runtime=args.runtime, device=args.device, threads=args.threads,
                        keep_intermediates=weak, presence=args.presence,
                        weights_dir=args.weights_dir, weak_model=args.model,
                        volume=volume_config(args), **decoding_config(args.method, args.tta,
                                                         args.mask_prompt))
    if args.engine == "ray":
        require("ray", "--engine ray")
    else:
        refuse_ray_options(args)
    dicom_seg = args.output_format == "dicom-seg"
    if dicom_seg and args.all_concepts:
        raise InputError("--output-format dicom-seg needs the prompts to segment; --all "
                         "finds a different set of targets in each image")
    if dicom_seg:
        require("dicom", "--output-format dicom-seg")
    settings = run_identity(config).key
    if warning := weak_model_warning(config):
        print(f"warning: {warning}", file=sys.stderr)
    items = collect_inputs(args.inputs, out_dir=args.out_dir)
    items = select_part(items, args.num_parts, args.part_id)
    if dicom_seg:
        check_dicom_inputs(items)
    job = SegmentJob(prompts=prompts, out_dir=args.out_dir, settings=settings,
                     overwrite=args.overwrite, dicom_seg=dicom_seg, uncertainty=weak,
                     all_concepts=args.all_concepts)
    if args.engine == "ray":
        from clipsam.apps.ray_engine import run_ray

        summary = run_ray(items, job, config, address=args.ray_address, workers=args.workers)
    else:
        quiet = getattr(args, "quiet", 0) > 0
        summary = run_local(items, job, functools.partial(Segmenter, config),
                            progress=None if quiet else _progress_bar)
    report(summary, single=len(items) == 1)
    return 1 if summary.failed else 0


def refuse_ray_options(args: argparse.Namespace) -> None:
    """--workers and --ray-address only mean something with --engine ray."""
    given = [name for name, value in (("--workers", args.workers),
                                      ("--ray-address", args.ray_address)) if value is not None]
    if given:
        raise InputError(f"{' and '.join(given)} only "
                         f"{'apply' if len(given) > 1 else 'applies'} to --engine ray")


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
