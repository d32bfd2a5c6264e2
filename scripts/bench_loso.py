"""Leave one set out: text alone, then k-shot adaptation, on a target the heads never saw.

    .venv/bin/python scripts/bench_loso.py --data ../shared/data \\
        --embedding-cache runs/emb_cache --models runs/loso_models --out docs/results/loso \\
        --shots 1 5 10 --draws 3

For every set S: the ``loso`` recipe is trained (``clipsam.train.fit.fit_from_samples``, what
``clipsam finetune --recipe loso --subset train`` runs) on ``--per-set`` images of the train part
of each *other* set;
S's held-out images are then segmented from S's prompt alone ("text"), and after
``clipsam.train.adapt.adapt`` (what ``clipsam adapt`` runs) from k labelled images of S's train
part, for several random draws of the k images (``--vector-only``: the concept vector without
its feature probe; ``--bank-weight 0``: the negative bank only calibrates, as before
2026-12-01; ``--views N``: N re-encoded augmented views of every shot learned from beside it).
``--subset train`` scores, to choose settings without held-out images, ``--limit`` images of
S's train part that are not the draw's shots instead. Segmentation is the MedCLIP-SAM pipeline
on the stored embeddings (``--embedding-cache``, the store ``clipsam eval`` and ``clipsam
finetune`` use; missing ones are encoded), gated by presence (a "not found" on a present
target scores 0). Writes ``loso_<set>.csv`` (one row per k, draw and image) and
``run_<set>.json`` as each set is done.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from clipsam.config import ModelConfig
from clipsam.eval.metrics import dice
from clipsam.io.atomic import write_text_atomic
from clipsam.io.image import segmenter_input
from clipsam.io.labelled_sets import list_samples
from clipsam.io.masks import read_mask
from clipsam.io.read import read_image
from clipsam.io.splits import split_of
from clipsam.models.grounding import load_grounding_model
from clipsam.models.segmenter import PromptableSegmenter
from clipsam.pipelines.medclipsam import MedClipSamPipeline
from clipsam.pipelines.registry import load_segmenter
from clipsam.train.adapt import AdaptConfig, Shot, adapt, pick_shots
from clipsam.train.captions import builtin_concepts
from clipsam.train.fit import fit_from_samples
from clipsam.train.recipes import recipe_named


def _order(sample) -> str:
    return hashlib.sha256(f"loso/{sample.set_name}/{sample.image_id}".encode()).hexdigest()


def _embedded(sample, segmenter: PromptableSegmenter) -> tuple:
    """(embedding, image) of a sample, the embedding from the store behind ``segmenter``."""
    image = segmenter_input(read_image(sample.image_path))
    return segmenter.encode(image), image


def _cases(scored: list, shots: set[str], limit: int | None, segmenter: PromptableSegmenter,
           loaded: dict) -> list:
    """(sample, embedding, image, expert mask) of the scored samples that are not shots (the
    first ``limit`` of them when given); each sample is read once into ``loaded``."""
    chosen = [s for s in scored if s.image_id not in shots][:limit]
    for s in chosen:
        if s.image_id not in loaded:
            loaded[s.image_id] = (s, *_embedded(s, segmenter), read_mask(s.mask_path))
    return [loaded[s.image_id] for s in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--embedding-cache", type=Path, default=Path("runs/emb_cache"),
                        metavar="DIR")
    parser.add_argument("--models", type=Path, default=Path("runs/loso"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sets", nargs="*", default=None)
    parser.add_argument("--shots", type=int, nargs="*", default=[1, 5, 10])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--recipe", default="loso")
    parser.add_argument("--per-set", type=int, default=40,
                        help="training images per set for the left-out models (a fixed hash "
                             "order), to fit eleven trainings into one session")
    parser.add_argument("--vector-only", action="store_true",
                        help="adapt the concept vector alone (no feature probe)")
    parser.add_argument("--bank-weight", type=float, default=AdaptConfig.bank_weight,
                        help="weight of the negative bank's cells in the adaptation loss (0: the "
                             "bank only calibrates, the adaptation before 2026-12-01)")
    parser.add_argument("--views", type=int, default=AdaptConfig.views,
                        help="re-encoded augmented views of every shot learned from beside it")
    parser.add_argument("--subset", choices=("test", "train"), default="test",
                        help="score held-out images (test) or, to choose settings, train-part "
                             "images that are not the draw's shots")
    parser.add_argument("--limit", type=int, default=20,
                        help="train-part images scored with --subset train (a fixed hash "
                             "order)")
    args = parser.parse_args()
    adapt_config = AdaptConfig(probe=not args.vector_only, bank_weight=args.bank_weight,
                               views=args.views)
    concepts = builtin_concepts()
    names = [n for n in sorted(concepts) if (args.data / n).is_dir()]
    samples = {n: list_samples(args.data / n) for n in names}
    segmenter = load_segmenter(ModelConfig(embedding_cache=args.embedding_cache))
    recipe = recipe_named(args.recipe)
    for left_out in args.sets or names:
        others = [n for n in names if n != left_out]
        folder = args.models / left_out
        if not (folder / "config.json").is_file():
            train = [s for n in others
                     for s in sorted((s for s in samples[n] if split_of(s) == "train"),
                                     key=_order)[:args.per_set]]
            fit_from_samples(train, segmenter.store, {n: concepts[n] for n in others}, recipe,
                             folder, segmenter=segmenter,
                             metadata={"left_out": left_out, "part": "train"})
        base = load_grounding_model(folder, segmenter=segmenter)
        prompt = concepts[left_out].target
        pool = [s for s in samples[left_out] if split_of(s) == "train"]
        scored = ([s for s in samples[left_out] if split_of(s) == "test"]
                  if args.subset == "test" else sorted(pool, key=_order))
        limit = args.limit if args.subset == "train" else None
        runs = [("text", 0, 0, base, set())]
        for k in args.shots:
            for draw in range(args.draws):
                chosen = pick_shots(pool, k, seed=draw)
                shots = [Shot(*_embedded(s, segmenter), read_mask(s.mask_path))
                         for s in chosen]
                adapted, _ = adapt(base, shots, prompt, segmenter, config=adapt_config)
                runs.append(("adapted", k, draw, adapted, {s.image_id for s in chosen}))
        rows, loaded = [], {}
        for kind, k, draw, model, shot_ids in tqdm(runs, desc=f"without {left_out}"):
            pipeline = MedClipSamPipeline(segmenter, model)
            for sample, embedding, image, reference in _cases(scored, shot_ids, limit,
                                                              segmenter, loaded):
                result = pipeline.run(image, prompt, embedding=embedding)
                rows.append({"set": left_out, "kind": kind, "shots": k, "draw": draw,
                             "id": sample.image_id, "gt_empty": not reference.any(),
                             "found": result.found,
                             "dice": f"{dice(result.mask, reference):.6f}"})
        args.out.mkdir(parents=True, exist_ok=True)
        text = [",".join(rows[0])] + [",".join(str(v) for v in r.values()) for r in rows]
        write_text_atomic(args.out / f"loso_{left_out}.csv", "\n".join(text) + "\n")
        run = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "recipe": args.recipe, "train_images_per_set": args.per_set,
               "shots": args.shots, "draws": args.draws, "left_out": left_out,
               "scored": args.subset if args.subset == "test"
               else f"train part, {args.limit} images that are not shots",
               "adapt": asdict(adapt_config)}
        write_text_atomic(args.out / f"run_{left_out}.json", json.dumps(run, indent=1) + "\n")
        print(f"wrote {args.out / f'loso_{left_out}.csv'} ({len(rows)} rows)", flush=True)


if __name__ == "__main__":
    main()
