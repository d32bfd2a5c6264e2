"""Encode every image of segmentation sets once with LiteMedSAM and cache the embeddings.

    .venv/bin/python scripts/cache_embeddings.py /work/shared/data/* --cache runs/emb_cache

Writes float16 ``<cache>/<set>/<id>.npy`` (256 x 64 x 64) and ``<id>.json`` (geometry); images
already cached are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
from pathlib import Path

from tqdm import tqdm

from clipsam.io.image import segmenter_input
from clipsam.io.read import read_image
from clipsam.models.sam import load_litemedsam
from clipsam.train.regions import Sample, is_cached, list_samples, save_embedding


def _shuffle_key(sample: Sample) -> str:
    return hashlib.sha256(f"cache-order/{sample.set_name}/{sample.image_id}".encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", type=Path, help="set folders (images/, masks/)")
    parser.add_argument("--cache", type=Path, default=Path("runs/emb_cache"))
    parser.add_argument("--runtime", default="auto", help="auto, torch or onnx")
    args = parser.parse_args()
    per_set = [sorted(list_samples(folder), key=_shuffle_key)
               for folder in args.sets if (folder / "images").is_dir()]
    samples = [s for group in per_set for s in group]
    # a fixed shuffle within each set and round-robin over sets: any prefix of the run is a
    # balanced sample of every set (classes, subjects, empty masks)
    rounds = itertools.zip_longest(*per_set)
    todo = [s for row in rounds for s in row if s is not None and not is_cached(args.cache, s)]
    print(f"{len(samples)} images, {len(todo)} to encode -> {args.cache}")
    if not todo:
        return
    segmenter = load_litemedsam(runtime=args.runtime)
    for sample in tqdm(todo, desc="encoding"):
        image = segmenter_input(read_image(sample.image_path))
        save_embedding(args.cache, sample, segmenter.encode(image))


if __name__ == "__main__":
    main()
