"""``clipsam eval``: score a method on a folder of images with reference masks."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from clipsam.apps.options import (
    add_decoding,
    add_device,
    add_presence,
    add_runtime,
    add_segmenter,
    add_subset,
    add_text_model,
    add_threads,
    add_volume,
    add_weights_dir,
    check_model_option,
    decoding_config,
    positive_int,
    volume_config,
)
from clipsam.config import MedClipSamConfig, ModelConfig, RunConfig
from clipsam.eval.methods import METHODS
from clipsam.eval.metrics import DEFAULT_NSD_TOLERANCE_MM

if TYPE_CHECKING:
    from clipsam.eval.dataset import EvalDataset


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="score a method on an evaluation set",
        description="Run METHOD on every image of DATA_DIR (images/, masks/, meta.csv) and write "
                    "OUT_DIR/per_image.csv and OUT_DIR/summary.json. A set of volumes "
                    "(images/<id>.nii.gz or DICOM series folders images/<id>/, with "
                    "masks/<id>.nii.gz) is scored per volume in 3-D: OUT_DIR/per_volume.csv "
                    "(Dice, IoU, HD95, NSD, volume error, slice detection). Rerunning with the "
                    "same OUT_DIR resumes a run made with the same settings (method, "
                    "configuration, model files, clipsam version) and refuses any other. Exit "
                    "code 1 if any image failed.")
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR",
                        help="labelled set: images/, masks/ and optional meta.csv (subjects, "
                             "pixel spacing); or a set of volumes")
    parser.add_argument("--method", required=True, choices=sorted(METHODS),
                        help="method to score (gt-box: boxes around the expert mask, the "
                             "upper bound of box prompts)")
    parser.add_argument("-p", "--prompt", default="", metavar="TEXT",
                        help="what to segment, for the methods that read text")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="only the first N images in sorted order")
    parser.add_argument("--out", type=Path, default=None, metavar="OUT_DIR",
                        help="output folder (default: runs/eval/<set>-<method>)")
    add_runtime(parser)
    add_segmenter(parser)
    parser.add_argument("--embedding-cache", type=Path, default=None, metavar="DIR",
                        help="keep image embeddings in DIR across runs (exact: a second method "
                             "or text model on the same images skips the encoder)")
    add_text_model(parser)
    add_presence(parser)
    add_decoding(parser)
    add_device(parser)
    add_threads(parser)
    add_weights_dir(parser)
    parser.add_argument("--model", type=Path, default=None, metavar="MODEL_DIR",
                        help="with --method weak or weak-box: the folder written by clipsam "
                             "weak-train")
    add_subset(parser, help="only the 'test' or 'train' subjects of clipsam's subject-hash "
                            "split; 'test' is refused when the text model was trained or "
                            "calibrated on any of these images (by content, whatever the "
                            "folder is called; volumes by patient, in any of its sets) or "
                            "does not record which")
    parser.add_argument("--allow-seen", action="store_true",
                        help="with --subset test: score images the text model saw anyway "
                             "(summary.json says how many)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in OUT_DIR, dropping the results already there")
    parser.add_argument("--save-intermediates", action="store_true",
                        help="also write OUT_DIR/intermediates/<id>/ with the overlay and the "
                             "pipeline's views (saliency, coarse mask, proposals, boxes)")
    parser.add_argument("--nsd-tolerance", type=float, default=DEFAULT_NSD_TOLERANCE_MM,
                        metavar="MM", help="NSD boundary tolerance in mm (default %(default)s)")
    add_volume(parser)
    parser.add_argument("--voxel-units", action="store_true",
                        help="volumes: the files' voxel spacing is not real (the set's source "
                             "gives none): report volumes in voxels and distances in voxel "
                             "steps instead of mL and mm")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from clipsam.errors import InputError
    from clipsam.eval.dataset import is_volume_set, open_dataset
    from clipsam.eval.harness import evaluate
    from clipsam.eval.methods import build_method
    from clipsam.pipelines.registry import weak_model_warning

    check_model_option(args.method, args.model)
    if args.allow_seen and args.subset != "test":
        raise InputError("--allow-seen only applies to --subset test")
    dataset = open_dataset(args.data_dir)
    if args.subset != "all":
        from clipsam.eval.dataset import subject_subset

        dataset = subject_subset(dataset, args.subset)
    volumes = is_volume_set(dataset)
    if args.voxel_units and not volumes:
        raise InputError("--voxel-units only applies to a set of volumes")
    out_dir = args.out or Path("runs") / "eval" / f"{dataset.name}-{args.method}"
    decoding = decoding_config(args.method, args.tta, args.mask_prompt)
    config = RunConfig(method=args.method, models=ModelConfig(
        segmenter=args.segmenter, runtime=args.runtime, device=args.device, threads=args.threads,
        text_model=args.text_model, weights_dir=args.weights_dir,
        embedding_cache=args.embedding_cache),
        weak_model=args.model, keep_intermediates=args.save_intermediates,
        presence=args.presence, volume=volume_config(args),
        **({"medclipsam": MedClipSamConfig(**decoding)} if decoding else {}))
    scope = dataclasses.replace(dataset, cases=dataset.cases[:args.limit])
    seen = seen_by_text_model(config, scope, volumes)
    if args.subset == "test" and seen:
        from clipsam.eval.seen import SEEN_KEY, SUBJECTS_KEY
        from clipsam.pipelines.registry import grounding_metadata

        key, kind = (SUBJECTS_KEY, "volumes' patients") if volumes else (SEEN_KEY, "images")
        message = (f"the text model was trained or calibrated on {seen} of these {len(scope)} "
                   f"{kind}")
        if key not in (grounding_metadata(config.models) or {}):
            message += (f" (it does not record the {'patients' if volumes else 'images'} it "
                        "was trained on, so all count as seen)")
        if not args.allow_seen:
            raise InputError(f"{message}; use --allow-seen to score them anyway")
        print(f"warning: {message}; they are scored anyway (--allow-seen)", file=sys.stderr)
    if warning := weak_model_warning(config):
        print(f"warning: {warning}", file=sys.stderr)
    method = build_method(args.method, config)
    options = {"prompt": args.prompt, "limit": args.limit, "tolerance_mm": args.nsd_tolerance,
               "progress": not args.quiet, "save_intermediates": args.save_intermediates,
               "overwrite": args.overwrite, "subset": args.subset, "seen_by_text_model": seen}
    if volumes:
        from clipsam.eval.volumes import evaluate_volumes

        summary = evaluate_volumes(dataset, method, out_dir, voxel_units=args.voxel_units,
                                   **options)
    else:
        summary = evaluate(dataset, method, out_dir, **options)
    failed = summary["failed"]
    if summary.get("n_images", summary.get("n_volumes")) == 1 and failed:
        print(f"error: {failed[0]['id']}: {failed[0]['error']}", file=sys.stderr)
        return 1
    print(_summary_line(summary))
    print(f"results in {out_dir}")
    for failure in failed:
        print(f"failed: {failure['id']}: {failure['error']}", file=sys.stderr)
    if failed:
        count = (f"{summary['n_volumes']} volumes" if volumes
                 else f"{summary['n_images']} images")
        print(f"error: {len(failed)} of {count} failed", file=sys.stderr)
        return 1
    return 0


def seen_by_text_model(config: RunConfig, dataset: EvalDataset,
                       volumes: bool = False) -> int | None:
    """How many of ``dataset``'s images the method's grounding text model was trained or
    calibrated on: 2-D image files by content, volumes by patient in any of its sets
    (:mod:`clipsam.eval.seen`); all when it does not record which. None for a method that
    reads no text or a CLIP-family text model (not knowable)."""
    from clipsam.eval.seen import count_seen, count_seen_volumes
    from clipsam.pipelines.registry import PIPELINES, grounding_metadata

    spec = PIPELINES.get(config.method)
    metadata = grounding_metadata(config.models) if spec and spec.reads_text else None
    if metadata is None:
        return None
    if volumes:
        return count_seen_volumes(dataset, metadata)
    return count_seen([c.image_path for c in dataset], metadata)


def _summary_line(summary: dict) -> str:
    def show(key: str) -> str:
        value = summary.get(key)
        return "-" if value is None else f"{value:.3f}"

    empty = summary["gt_empty"]
    if summary.get("kind") == "volumes":
        return (f"{summary['method']} on {summary['dataset']}: {summary['n']} volumes "
                f"dice={show('dice_mean')} (median {show('dice_median')}) iou={show('iou_mean')} "
                f"hd95={show('hd95_mean')} nsd={show('nsd_mean')} volume error="
                f"{show('volume_error_mean')} {summary['volume_unit']}; slice detection "
                f"precision {show('slice_precision_pooled')} recall "
                f"{show('slice_recall_pooled')}; s/volume={show('seconds_per_volume')} "
                f"({show('seconds_over_encode')}x its encoder passes)")
    text = (f"{summary['method']} on {summary['dataset']}: n={summary['n']} "
            f"dice={show('dice_mean')} (median {show('dice_median')}) iou={show('iou_mean')} "
            f"hd95={show('hd95_mean')} nsd={show('nsd_mean')} "
            f"s/image={show('seconds_per_image')} "
            f"(end to end {show('wall_seconds_per_image')})")
    if empty["n"]:
        accuracy = empty["not_found_accuracy"]
        text += (f"; {empty['n']} empty-reference images"
                 + ("" if accuracy is None else f", not-found accuracy {accuracy:.3f}"))
    return text
