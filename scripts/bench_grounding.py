"""Benchmark the grounding model on the held-out split; prints markdown tables.

    .venv/bin/python scripts/bench_grounding.py --data /work/shared/data \\
        --model runs/grounding_trainsplit [--compare runs/grounding_trainsplit_infonce] \\
        [--loso --shots 1 5 10]

Per set, on held-out subjects with cached embeddings (scripts/cache_embeddings.py):
peak-in-target rate, Dice of map -> boxes -> LiteMedSAM (always decoded, and gated by
is_present), Dice of the ground-truth box, presence recall on images with a target and
"not found" accuracy on images without one. ``--loso`` trains on four sets and tests on the
fifth, text only and after k-shot adaptation from the fifth set's training images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from clipsam.io.masks import read_mask
from clipsam.models.grounding import GroundingModel, load_grounding_model
from clipsam.models.grounding.grid import mask_to_grid
from clipsam.models.grounding.localize import map_to_boxes
from clipsam.train.adapt import learn_concept, with_concept
from clipsam.train.captions import builtin_concepts
from clipsam.train.fit import fit_from_samples
from clipsam.train.regions import (
    Sample,
    is_cached,
    list_samples,
    load_embedding,
    read_split,
    select,
)
from clipsam.train.trainer import TrainConfig


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def gt_box(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], np.float32)


def decode(segmenter, embedding, boxes: np.ndarray) -> np.ndarray:
    if not len(boxes):
        return np.zeros(embedding.geometry.original_size, bool)
    return segmenter.predict(embedding, boxes=boxes).masks.any(axis=0)


def evaluate(model: GroundingModel, samples: list[Sample], cache: Path, segmenter, text: str,
             with_gt_box: bool = True) -> dict[str, float]:
    peaks, dices, gated, gt_dices, recall, not_found = [], [], [], [], [], []
    for sample in samples:
        embedding = load_embedding(cache, sample)
        mask = read_mask(sample.mask_path)
        prob = model.similarity_map(embedding, text)
        present = model.is_present(embedding, text)
        if not mask.any():
            not_found.append(not present)
            continue
        recall.append(present)
        cells = mask_to_grid(mask, embedding.geometry, prob.shape[-1])
        peaks.append(cells.flat[int(np.argmax(prob))] > 0)
        predicted = decode(segmenter, embedding, map_to_boxes(prob, embedding.geometry))
        dices.append(dice(predicted, mask))
        gated.append(dices[-1] if present else 0.0)
        if with_gt_box:
            gt_dices.append(dice(decode(segmenter, embedding, gt_box(mask)), mask))
    mean = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
    return {"n": len(samples), "peak": mean(peaks), "dice": mean(dices), "gated": mean(gated),
            "gt_box": mean(gt_dices), "recall": mean(recall), "not_found": mean(not_found),
            "n_empty": len(not_found)}


def fmt(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="train-split model folder")
    parser.add_argument("--compare", type=Path, nargs="*", default=[],
                        help="more train-split models (e.g. the InfoNCE one)")
    parser.add_argument("--cache", type=Path, default=Path("runs/emb_cache"))
    parser.add_argument("--split", type=Path, default=Path("runs/grounding_split.json"))
    parser.add_argument("--loso", action="store_true")
    parser.add_argument("--loso-epochs", type=int, default=8)
    parser.add_argument("--loso-out", type=Path, default=Path("runs/grounding_loso"))
    parser.add_argument("--shots", type=int, nargs="*", default=[1, 5, 10])
    args = parser.parse_args()

    from clipsam.models.sam import load_litemedsam

    segmenter = load_litemedsam()
    concepts = builtin_concepts()
    split = read_split(args.split)
    sets = [n for n in sorted(concepts) if (args.data / n / "images").is_dir()]
    every = {n: [s for s in list_samples(args.data / n) if is_cached(args.cache, s)]
             for n in sets}
    test = {n: select(every[n], split, "test") for n in sets}
    train = {n: select(every[n], split, "train") for n in sets}

    print("## Held-out split: text -> map -> boxes -> LiteMedSAM\n")
    print("| model | set | test images | peak in target | Dice | Dice gated by presence "
          "| Dice GT box | presence recall | not-found acc (empty) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for index, folder in enumerate([args.model, *args.compare]):
        model = load_grounding_model(folder)
        for name in sets:
            r = evaluate(model, test[name], args.cache, segmenter, concepts[name].target,
                         with_gt_box=index == 0)
            print(f"| {folder.name} | {name} | {r['n']} | {fmt(r['peak'])} | {fmt(r['dice'])} "
                  f"| {fmt(r['gated'])} | {fmt(r['gt_box'])} | {fmt(r['recall'])} "
                  f"| {fmt(r['not_found'])} (n={r['n_empty']}) |", flush=True)

    if not args.loso:
        return
    print("\n## Leave one set out: trained on the other sets, then k-shot adaptation\n")
    header = " | ".join(f"{k}-shot Dice" for k in args.shots)
    print(f"| held-out set | text-only peak | text-only Dice | {header} |")
    print("|---|---|---|" + "---|" * len(args.shots))
    for name in sets:
        others = [s for n in sets if n != name for s in train[n]]
        config = TrainConfig(epochs=args.loso_epochs)
        model = fit_from_samples(others, args.cache, concepts, config,
                                 args.loso_out / f"without_{name}", progress=False)
        text = concepts[name].target
        base = evaluate(model, test[name], args.cache, segmenter, text, with_gt_box=False)
        row = [fmt(base["peak"]), fmt(base["dice"])]
        labelled = [s for s in train[name] if read_mask(s.mask_path).any()]
        rng = np.random.default_rng(0)
        for k in args.shots:
            if len(labelled) < k:
                row.append("-")
                continue
            shots = [labelled[i] for i in rng.permutation(len(labelled))[:k]]
            vector = learn_concept(model, [load_embedding(args.cache, s) for s in shots],
                                   [read_mask(s.mask_path) for s in shots], text)
            adapted = with_concept(model, text, vector)
            row.append(fmt(evaluate(adapted, test[name], args.cache, segmenter, text,
                                    with_gt_box=False)["dice"]))
        print(f"| {name} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
