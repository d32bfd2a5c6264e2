"""``clipsam finetune``: train the grounding heads from segmentation sets or a caption table.

The one training front-end of the grounding model: the shipped model is rebuilt by
``clipsam finetune`` (its default recipe) with the command in its model card. With
``--text-model NAME`` the chosen samples fine-tune an image-text model instead
(:mod:`clipsam.apps.cmd_finetune_clip`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from clipsam.apps import cmd_finetune_clip
from clipsam.apps.options import (
    add_device,
    add_runtime,
    add_subset,
    add_threads,
    positive_float,
    positive_int,
)

LOSS_CHOICES = ("dhn-nce", "info-nce")


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
                        help="segmentation set folders (images/, masks/, optional meta.csv), "
                             "in any order: the sets clipsam knows train in the order of its "
                             "concepts.json, any others after them by folder name")
    source.add_argument("--captions", type=Path, metavar="CSV",
                        help="table with 'filepath' and 'title' columns (whole-image captions)")
    parser.add_argument("-p", "--prompt", nargs="+", default=None, metavar="TEXT",
                        help="target of each --data set, in the order given (needed for sets "
                             "clipsam does not know)")
    parser.add_argument("--csv-separator", default=None, metavar="SEP",
                        help="column separator of the --captions table, one character "
                             "(default ',')")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR",
                        help="folder for the model and its per-epoch checkpoint (use it as "
                             "--text-model)")
    parser.add_argument("--recipe", default=None, metavar="NAME",
                        help="named settings of heads, training and calibration "
                             "(clipsam.train.recipes; default: DEFAULT_RECIPE, from random "
                             "weights); the options below override its training settings")
    parser.add_argument("--init", type=Path, default=None, metavar="MODEL_DIR",
                        help="grounding model folder whose heads training starts from; needed "
                             "by a recipe that names one (e.g. anatomy: a builtin-xlong model), "
                             "refused by the others")
    add_subset(parser, choices=("all", "train"),
               help="'train': only subjects of the train part of the subject split "
                    "(clipsam.io.splits), so that `clipsam eval --subset test` scores unseen "
                    "subjects (default %(default)s)")
    parser.add_argument("--exclude", type=Path, nargs="*", default=[], metavar="DIR",
                        help="folders of images (DIR/images) whose ids, and every image of the "
                             "same subject, are left out of training and calibration, e.g. "
                             "examples")
    parser.add_argument("--loss", choices=LOSS_CHOICES, default=None,
                        help="contrastive term of the training loss (default: the recipe's)")
    parser.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                        help="training epochs (default: the recipe's)")
    parser.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                        help="images per training step (default: the recipe's)")
    parser.add_argument("--lr", type=positive_float, default=None, metavar="RATE",
                        help="peak learning rate of the one-cycle schedule (default: the "
                             "recipe's)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the training draws (default: the recipe's)")
    parser.add_argument("--embedding-cache", type=Path, default=None, metavar="DIR",
                        help="keep image embeddings in DIR, keyed by content and segmenter "
                             "(the store of clipsam eval --embedding-cache; default: "
                             "<clipsam cache>/embeddings)")
    add_runtime(parser, trains=True)
    add_device(parser, trains=True)
    add_threads(parser)
    cmd_finetune_clip.add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _excluded_ids(folders: list[Path]) -> set[str]:
    from clipsam.errors import InputError
    from clipsam.io.labelled_sets import IMAGE_SUFFIXES

    for folder in folders:
        if not (folder / "images").is_dir():
            raise InputError(f"--exclude {folder} is not a folder of images (it needs "
                             "images/)")
    return {p.stem for folder in folders for p in (folder / "images").iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES}


def ordered_sets(folders: Sequence[Path], prompts: Sequence[str] | None = None
                 ) -> list[tuple[Path, str | None]]:
    """The ``--data`` folders with their prompts, in training order whatever order they were
    given in: the sets clipsam knows in the order of its ``concepts.json`` (the order the
    shipped model was trained and recorded in), then any others by folder name. Refuses two
    sets of one name and a prompt count that does not match."""
    from clipsam.errors import InputError
    from clipsam.train.captions import builtin_concepts

    if prompts is not None and len(prompts) != len(folders):
        raise InputError(f"give one --prompt per --data folder ({len(folders)}), "
                         f"got {len(prompts)}")
    names = [folder.name for folder in folders]
    if len(set(names)) < len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise InputError(f"two --data sets are named {', '.join(twice)}: a set is known by "
                         "its folder name, rename one")
    known = list(builtin_concepts())
    pairs = list(zip(folders, prompts or [None] * len(folders), strict=True))
    return sorted(pairs, key=lambda pair: (known.index(pair[0].name), "")
                  if pair[0].name in known else (len(known), pair[0].name))


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from clipsam.errors import InputError
    from clipsam.io.labelled_sets import list_samples
    from clipsam.io.splits import split_of
    from clipsam.train.caption_table import caption_samples
    from clipsam.train.captions import builtin_concepts, concept_for

    image_text = cmd_finetune_clip.image_text_requested(args)
    # the data arguments first: a bad one is refused before torch and the models load
    captions = None
    if args.captions is not None:
        if args.prompt is not None:
            raise InputError("--prompt only applies to --data (a caption table has its "
                             "captions)")
        rows = caption_samples(args.captions, args.csv_separator or ",")
        samples, captions = [s for s, _ in rows], [c for _, c in rows]
        concepts = {}
        source: str | list[str] = str(args.captions)
    else:
        if args.csv_separator is not None:
            raise InputError("--csv-separator only applies to --captions")
        known = builtin_concepts()
        sets = ordered_sets(args.data, args.prompt)
        concepts, samples = {}, []
        for folder, prompt in sets:
            set_samples = list_samples(folder)  # refuses a folder that is not a labelled set
            if prompt is None and folder.name not in known:
                raise InputError(f"clipsam does not know the target of {folder}: give --prompt")
            concepts[folder.name] = concept_for(folder.name, prompt)
            samples.extend(set_samples)
        source = [str(folder) for folder, _ in sets]
    excluded_ids = _excluded_ids(args.exclude)
    excluded = {(s.set_name, s.subject) for s in samples if s.image_id in excluded_ids}
    keep = [i for i, s in enumerate(samples) if (s.set_name, s.subject) not in excluded
            and (args.subset == "all" or split_of(s) == "train")]
    if not keep:
        raise InputError("no image left to train on after --subset and --exclude")
    samples = [samples[i] for i in keep]
    captions = [captions[i] for i in keep] if captions is not None else None
    if image_text:
        return cmd_finetune_clip.run_image_text(args, samples, captions, concepts)
    from clipsam.config import ModelConfig
    from clipsam.models.device import use_torch_threads
    from clipsam.models.weights import cache_dir
    from clipsam.pipelines.registry import HEADS_SEGMENTER, load_segmenter
    from clipsam.train.fit import fit_from_samples
    from clipsam.train.recipes import DEFAULT_RECIPE, recipe_named

    recipe = recipe_named(args.recipe or DEFAULT_RECIPE)
    overrides = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size,
                                   "learning_rate": args.lr, "loss": args.loss,
                                   "seed": args.seed}.items() if v is not None}
    if overrides:
        recipe = replace(recipe, train=replace(recipe.train, **overrides))
    progress = not args.quiet
    models = ModelConfig(segmenter=HEADS_SEGMENTER, runtime=args.runtime, device=args.device,
                         threads=args.threads,
                         embedding_cache=args.embedding_cache or cache_dir() / "embeddings")
    segmenter = load_segmenter(models)
    use_torch_threads(args.threads)  # the heads train in PyTorch, on the CPU
    metadata = {"data": source, "part": args.subset,
                "excluded_subjects": sorted(f"{a}/{b}" for a, b in excluded),
                "segmenter": models.segmenter}
    model = fit_from_samples(samples, segmenter.store, concepts, recipe, args.out,
                             segmenter=segmenter, captions=captions, metadata=metadata,
                             progress=progress, init=args.init)
    print(f"saved {args.out} (model-wide presence threshold {model.presence.threshold:.3f}); "
          f"use it with --text-model {args.out}")
    return 0
