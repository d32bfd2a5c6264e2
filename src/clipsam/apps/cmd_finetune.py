"""``clipsam finetune``: train the grounding heads from segmentation sets or a caption table."""

from __future__ import annotations

import argparse
from pathlib import Path

LOSS_CHOICES = ("dhn-nce", "info-nce")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "finetune", help="train the built-in grounding model's heads on your data",
        description="Train the grounding heads (the text encoder and LiteMedSAM stay frozen) "
                    "on segmentation sets (DIR/images, DIR/masks, optional DIR/meta.csv) or a "
                    "caption table, and save a model folder usable as --text-model. Images are "
                    "encoded once into --cache; a checkpoint per epoch in OUT lets an "
                    "interrupted run resume.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, nargs="+", metavar="DIR",
                        help="segmentation set folders")
    source.add_argument("--captions", type=Path, metavar="CSV",
                        help="table with 'filepath' and 'title' columns (whole-image captions)")
    parser.add_argument("--prompt", nargs="+", default=None, metavar="TEXT",
                        help="target of each --data set (needed for sets clipsam does not know)")
    parser.add_argument("--csv-separator", default=",", metavar="SEP")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR")
    parser.add_argument("--loss", choices=LOSS_CHOICES, default="dhn-nce")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None,
                        help="embedding cache (default: <clipsam cache>/embeddings)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from clipsam.errors import InputError
    from clipsam.models.sam import load_litemedsam
    from clipsam.models.weights import cache_dir
    from clipsam.train.captions import builtin_concepts, concept_for
    from clipsam.train.fit import fit_from_samples
    from clipsam.train.regions import caption_samples, encode_missing, list_samples
    from clipsam.train.trainer import TrainConfig

    if args.epochs < 1 or args.batch_size < 1:
        raise InputError("--epochs and --batch-size must be at least 1")
    cache = args.cache or cache_dir() / "embeddings"
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
    progress = not args.quiet
    encode_missing(samples, cache, load_litemedsam(), progress)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                         learning_rate=args.lr, loss=args.loss, seed=args.seed)
    source = str(args.captions) if args.captions else [str(d) for d in args.data]
    model = fit_from_samples(samples, cache, concepts, config, args.out, captions=captions,
                             metadata={"data": source}, progress=progress)
    print(f"saved {args.out} (presence threshold {model.presence.threshold:.3f}); use it with "
          f"--text-model {args.out}")
    return 0
