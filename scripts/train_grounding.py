"""Train clipsam's grounding heads on segmentation sets with cached LiteMedSAM embeddings.

The shipped model (all data, fixed seed):

    .venv/bin/python scripts/train_grounding.py --data /work/shared/data --all \\
        --out src/clipsam/data/grounding

The train-split model for honest held-out figures (writes/reads the subject split file):

    .venv/bin/python scripts/train_grounding.py --data /work/shared/data \\
        --out runs/grounding_trainsplit

Embeddings come from ``--cache`` (see scripts/cache_embeddings.py); ``--cached-only`` trains on
the images cached so far instead of encoding the rest first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clipsam.train.captions import builtin_concepts
from clipsam.train.fit import fit_from_samples
from clipsam.train.regions import (
    is_cached,
    list_samples,
    read_split,
    select,
    write_split,
)
from clipsam.train.trainer import LOSSES, TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of set folders")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path("runs/emb_cache"))
    parser.add_argument("--split", type=Path, default=Path("runs/grounding_split.json"))
    parser.add_argument("--all", action="store_true", help="train on every image (no test part)")
    parser.add_argument("--exclude", nargs="*", default=[], help="sets left out")
    parser.add_argument("--cached-only", action="store_true")
    parser.add_argument("--loss", choices=LOSSES, default="dhn-nce")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--crop", type=int, default=TrainConfig.crop,
                        help="training crop of the embedding grid, in cells")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    concepts = builtin_concepts()
    samples = [s for name in sorted(concepts) if name not in args.exclude
               and (args.data / name / "images").is_dir()
               for s in list_samples(args.data / name)]
    if not args.split.is_file():
        write_split([s for name in sorted(concepts) if (args.data / name).is_dir()
                     for s in list_samples(args.data / name)], args.split)
    if not args.all:
        samples = select(samples, read_split(args.split), "train")
    if args.cached_only:
        samples = [s for s in samples if is_cached(args.cache, s)]
    else:
        from clipsam.models.sam import load_litemedsam
        from clipsam.train.regions import encode_missing

        if not all(is_cached(args.cache, s) for s in samples):
            encode_missing(samples, args.cache, load_litemedsam())
    config = TrainConfig(epochs=args.epochs, loss=args.loss, seed=args.seed, crop=args.crop)
    counts = {name: sum(s.set_name == name for s in samples) for name in sorted(concepts)}
    print(f"training on {len(samples)} images: {counts}")
    metadata = {"data": {k: v for k, v in counts.items() if v},
                "split": "all" if args.all else f"train part of {args.split.name}",
                "segmenter": "litemedsam"}
    model = fit_from_samples(samples, args.cache, concepts, config, args.out, metadata=metadata)
    print(f"saved {args.out}: presence threshold {model.presence.threshold:.3f}")


if __name__ == "__main__":
    main()
