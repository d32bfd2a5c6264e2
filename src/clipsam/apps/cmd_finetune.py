"""``clipsam finetune``: train the grounding heads from segmentation sets or a caption table.

The one training front-end of the grounding model: the shipped model is rebuilt by
``clipsam finetune`` (its default recipe) with the command in its model card. With
``--text-model NAME`` the chosen samples fine-tune an image-text model instead
(:mod:`clipsam.apps.cmd_finetune_clip`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clipsam.apps import cmd_finetune_clip

LOSS_CHOICES = ("dhn-nce", "info-nce")
PARTS = ("all", "train")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "finetune", help="train the built-in grounding model's heads, or fine-tune an "
                         "image-text model, on your data",
        description="Train the grounding heads (the text encoder and LiteMedSAM stay frozen) "
                    "on segmentation sets (DIR/images, DIR/masks, optional DIR/meta.csv) or a "
                    "caption table, calibrate 'not found' and mask sources on held-back "
                    "subjects, and save a model folder usable as --text-model. Images are "
                    "encoded once into --embedding-cache (the store clipsam eval uses too); "
                    "a checkpoint per epoch in OUT lets an interrupted run resume. With "
                    "--text-model NAME (biomedclip, clip-vit-b16...) it fine-tunes that "
                    "image-text model instead, as MedCLIP-SAM does (DHN-NCE on image-caption "
                    "pairs).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, nargs="+", metavar="DIR",
                        help="segmentation set folders")
    source.add_argument("--captions", type=Path, metavar="CSV",
                        help="table with 'filepath' and 'title' columns (whole-image captions)")
    parser.add_argument("--prompt", nargs="+", default=None, metavar="TEXT",
                        help="target of each --data set (needed for sets clipsam does not know)")
    parser.add_argument("--csv-separator", default=",", metavar="SEP")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR")
    parser.add_argument("--recipe", default=None, metavar="NAME",
                        help="named settings of heads, training and calibration "
                             "(clipsam.train.recipes; default: the shipped model's, "
                             "SHIPPED_RECIPE); the options below override its training "
                             "settings")
    parser.add_argument("--part", choices=PARTS, default="all",
                        help="'train': only subjects of the train part of the subject split "
                             "(clipsam.io.splits), so that `clipsam eval --subset test` scores "
                             "unseen subjects")
    parser.add_argument("--exclude", type=Path, nargs="*", default=[], metavar="DIR",
                        help="folders of images (DIR/images) whose ids, and every image of the "
                             "same subject, are left out of training and calibration, e.g. "
                             "examples")
    parser.add_argument("--loss", choices=LOSS_CHOICES, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--embedding-cache", type=Path, default=None, metavar="DIR",
                        help="keep image embeddings in DIR, keyed by content and segmenter "
                             "(the store of clipsam eval --embedding-cache; default: "
                             "<clipsam cache>/embeddings)")
    cmd_finetune_clip.add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _excluded_ids(folders: list[Path]) -> set[str]:
    from clipsam.io.labelled_sets import IMAGE_SUFFIXES

    return {p.stem for folder in folders for p in (folder / "images").iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES}


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from clipsam.config import ModelConfig
    from clipsam.errors import InputError
    from clipsam.io.labelled_sets import list_samples
    from clipsam.io.splits import split_of
    from clipsam.models.weights import cache_dir
    from clipsam.pipelines.registry import HEADS_SEGMENTER, load_segmenter
    from clipsam.train.caption_table import caption_samples
    from clipsam.train.captions import builtin_concepts, concept_for
    from clipsam.train.fit import fit_from_samples
    from clipsam.train.recipes import SHIPPED_RECIPE, recipe_named

    image_text = cmd_finetune_clip.image_text_requested(args)
    recipe = recipe_named(args.recipe or SHIPPED_RECIPE)
    overrides = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size,
                                   "learning_rate": args.lr, "loss": args.loss,
                                   "seed": args.seed}.items() if v is not None}
    if any(v < 1 for k, v in overrides.items() if k in ("epochs", "batch_size")):
        raise InputError("--epochs and --batch-size must be at least 1")
    if overrides:
        recipe = replace(recipe, train=replace(recipe.train, **overrides))
    captions = None
    if args.captions is not None:
        rows = caption_samples(args.captions, args.csv_separator)
        samples, captions = [s for s, _ in rows], [c for _, c in rows]
        concepts = {}
    else:
        if args.prompt is not None and len(args.prompt) != len(args.data):
            raise InputError(f"give one --prompt per --data folder ({len(args.data)}), "
                             f"got {len(args.prompt)}")
        known = builtin_concepts()
        concepts, samples = {}, []
        for i, folder in enumerate(args.data):
            prompt = args.prompt[i] if args.prompt else None
            if prompt is None and folder.name not in known:
                raise InputError(f"clipsam does not know the target of {folder}: give --prompt")
            concepts[folder.name] = concept_for(folder.name, prompt)
            samples.extend(list_samples(folder))
    excluded_ids = _excluded_ids(args.exclude)
    excluded = {(s.set_name, s.subject) for s in samples if s.image_id in excluded_ids}
    keep = [i for i, s in enumerate(samples) if (s.set_name, s.subject) not in excluded
            and (args.part == "all" or split_of(s) == "train")]
    if not keep:
        raise InputError("no image left to train on after --part and --exclude")
    samples = [samples[i] for i in keep]
    captions = [captions[i] for i in keep] if captions is not None else None
    if image_text:
        return cmd_finetune_clip.run_image_text(args, samples, captions, concepts)
    progress = not args.quiet
    models = ModelConfig(segmenter=HEADS_SEGMENTER,
                         embedding_cache=args.embedding_cache or cache_dir() / "embeddings")
    segmenter = load_segmenter(models)
    source = str(args.captions) if args.captions else [str(d) for d in args.data]
    metadata = {"data": source, "part": args.part,
                "excluded_subjects": sorted(f"{a}/{b}" for a, b in excluded),
                "segmenter": models.segmenter}
    model = fit_from_samples(samples, segmenter.store, concepts, recipe, args.out,
                             segmenter=segmenter, captions=captions, metadata=metadata,
                             progress=progress)
    print(f"saved {args.out} (model-wide presence threshold {model.presence.threshold:.3f}); "
          f"use it with --text-model {args.out}")
    return 0
