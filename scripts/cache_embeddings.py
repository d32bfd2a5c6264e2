"""Encode every image of segmentation sets once with LiteMedSAM and cache the embeddings.

    .venv/bin/python scripts/cache_embeddings.py ../shared/data/* --cache runs/emb_cache

A thin CLI over :func:`clipsam.train.embedding_cache.encode_missing` (resumable; identical image
files are encoded once). Sets are interleaved in a fixed shuffled order, so any prefix of an
interrupted run is a balanced sample of every set. ``clipsam finetune`` encodes what is missing
itself; this script only fills the cache ahead of it.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
from pathlib import Path

from clipsam.io.labelled_sets import Sample, list_samples
from clipsam.io.splits import split_of
from clipsam.models.sam import load_litemedsam
from clipsam.train.embedding_cache import encode_missing


def _shuffle_key(sample: Sample) -> str:
    return hashlib.sha256(f"cache-order/{sample.set_name}/{sample.image_id}".encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", type=Path, help="set folders (images/, masks/)")
    parser.add_argument("--cache", type=Path, default=Path("runs/emb_cache"))
    parser.add_argument("--runtime", default="auto", help="auto, torch or onnx")
    parser.add_argument("--subset", choices=("all", "train", "test"), default="all",
                        help="only this part of the subject split (clipsam.io.splits)")
    args = parser.parse_args()
    per_set = [sorted(list_samples(folder), key=_shuffle_key)
               for folder in args.sets if (folder / "images").is_dir()]
    order = [s for row in itertools.zip_longest(*per_set) for s in row
             if s is not None and args.subset in ("all", split_of(s))]
    encoded = encode_missing(order, args.cache, load_litemedsam(runtime=args.runtime))
    print(f"{len(order)} images, {encoded} encoded -> {args.cache}")


if __name__ == "__main__":
    main()
