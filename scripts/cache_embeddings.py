"""Encode every image of segmentation sets once and keep the embeddings in the embedding store.

    .venv/bin/python scripts/cache_embeddings.py ../shared/data/* --embedding-cache runs/emb_cache

A thin CLI over :func:`clipsam.models.embedding_store.store_images` (resumable; an image is
encoded once whatever set or name it comes under). Sets are interleaved in a fixed shuffled
order, so any prefix of an interrupted run is a balanced sample of every set. ``clipsam
finetune`` and ``clipsam eval`` with the same ``--embedding-cache`` encode what is missing
themselves; this script only fills the store ahead of them.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
from pathlib import Path

from clipsam.config import RUNTIMES, SEGMENTERS, ModelConfig
from clipsam.io.labelled_sets import Sample, list_samples
from clipsam.io.splits import split_of
from clipsam.models.embedding_store import store_images
from clipsam.pipelines.registry import load_segmenter


def _shuffle_key(sample: Sample) -> str:
    return hashlib.sha256(f"cache-order/{sample.set_name}/{sample.image_id}".encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", type=Path, help="set folders (images/, masks/)")
    parser.add_argument("--embedding-cache", type=Path, default=Path("runs/emb_cache"),
                        metavar="DIR", help="the embedding store (default: %(default)s)")
    parser.add_argument("--segmenter", choices=SEGMENTERS, default="litemedsam",
                        help="promptable segmenter whose embeddings are stored")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="engine of the segmenter (default: auto)")
    parser.add_argument("--subset", choices=("all", "train", "test"), default="all",
                        help="only this part of the subject split (clipsam.io.splits)")
    args = parser.parse_args()
    per_set = [sorted(list_samples(folder), key=_shuffle_key)
               for folder in args.sets if (folder / "images").is_dir()]
    order = [s for row in itertools.zip_longest(*per_set) for s in row
             if s is not None and args.subset in ("all", split_of(s))]
    segmenter = load_segmenter(ModelConfig(segmenter=args.segmenter, runtime=args.runtime,
                                           embedding_cache=args.embedding_cache))
    keys = store_images([s.image_path for s in order], segmenter.store, segmenter,
                        progress=True)
    print(f"{len(order)} images ({len(set(keys))} distinct) -> {args.embedding_cache}")


if __name__ == "__main__":
    main()
