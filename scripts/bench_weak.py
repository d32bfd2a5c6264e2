"""Benchmark weak supervision: the cascade vs a network trained on its pseudo-masks.

For each set of the data folder the images are split 80/20 by subject (``subject``/``patient``
column of meta.csv, else the image id) with the same stable hash as the built-in grounding
model's training split (:func:`clipsam.io.splits.split_of`), so no test subject was seen by
either model. The cascade labels the TRAIN images (their expert masks are only used to report
the pseudo-masks' quality, never for training), ``train_weak`` fits the network on those
pseudo-masks, and both the cascade and the network segment the TEST images, scored by Dice
against the expert masks (:mod:`clipsam.eval.metrics` rules: both empty = 1).

    .venv/bin/python scripts/bench_weak.py --sets hc18 cxr_lungs --max-train 120 --max-test 40

Pseudo-masks and models are kept under ``--out`` (default runs/bench_weak/<method>/<set>); a
rerun reuses the pseudo-masks and retrains the network. The markdown report goes to stdout and
``<out>/report.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from clipsam.api import run_config
from clipsam.eval.metrics import dice
from clipsam.io.atomic import write_text_atomic
from clipsam.io.labelled_sets import Sample, list_samples
from clipsam.io.masks import read_mask
from clipsam.io.masks import read_mask as read_pseudo_mask
from clipsam.io.splits import split_of
from clipsam.models.weak_net import WeakTrainConfig
from clipsam.pipelines.registry import TEXT_FREE_METHODS, build_pipeline, load_models
from clipsam.pipelines.weak import WeakPipeline
from clipsam.train.weak import train_weak
from clipsam.train.weak_pseudo import UnlabelledImage, load_plane, pseudo_mask_path

PROMPTS = {  # what a user would type, from the data README
    "hc18": "fetal head",
    "busi": "breast tumour",
    "cxr_lungs": "left and right lungs",
    "lgg_flair": "brain tumour",
    "kvasir_polyp": "polyp",
}


def subset(samples: list[Sample], limit: int | None) -> list[Sample]:
    """At most ``limit`` samples, chosen by a stable hash of the id (not the first N)."""
    if limit is None or len(samples) <= limit:
        return samples
    ranked = sorted(samples, key=lambda s: hashlib.sha256(s.image_id.encode()).digest())
    return sorted(ranked[:limit], key=lambda s: s.image_id)


def bench_set(set_dir: Path, prompt: str, pipeline, encoder, train: WeakTrainConfig,
              out: Path, max_train: int | None, max_test: int | None) -> dict:
    samples = list_samples(set_dir)
    train_samples = subset([s for s in samples if split_of(s) == "train"], max_train)
    test_samples = subset([s for s in samples if split_of(s) == "test"], max_test)
    model_dir = out / set_dir.name
    start = time.perf_counter()
    config = train_weak([UnlabelledImage(s.image_id, s.image_path) for s in train_samples],
                        pipeline, prompt, model_dir, train, encoder=encoder)
    train_seconds = time.perf_counter() - start
    pseudo_dice = [dice(read_pseudo_mask(pseudo_mask_path(model_dir, s.image_id)),
                        read_mask(s.mask_path)) for s in train_samples]
    weak = WeakPipeline(model_dir)
    cascade_dice, weak_dice, cascade_s, weak_s = [], [], 0.0, 0.0
    for sample in test_samples:
        plane, reference = load_plane(sample.image_path), read_mask(sample.mask_path)
        tick = time.perf_counter()
        embedding = encoder.encode(plane)
        cascade_dice.append(dice(pipeline.run(plane, prompt, embedding=embedding).mask,
                                 reference))
        cascade_s += time.perf_counter() - tick
        tick = time.perf_counter()
        weak_dice.append(dice(weak.run(plane, prompt).mask, reference))
        weak_s += time.perf_counter() - tick
    n_test = len(test_samples)
    return {
        "set": set_dir.name, "prompt": prompt,
        "train_subjects": len({s.subject for s in train_samples}),
        "train_images": len(train_samples),
        "pseudo_found": sum(item.pseudo_found for item in config.data),
        "pseudo_dice": float(np.mean(pseudo_dice)),
        "test_subjects": len({s.subject for s in test_samples}), "test_images": n_test,
        "cascade_dice": float(np.mean(cascade_dice)), "weak_dice": float(np.mean(weak_dice)),
        "cascade_s": cascade_s / n_test, "weak_s": weak_s / n_test,
        "train_min": train_seconds / 60,
    }


def report(rows: list[dict], method: str, train: WeakTrainConfig, command: str) -> str:
    lines = [
        f"# Weak supervision vs its teacher ({method})",
        "",
        f"- command: `{command}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{torch.get_num_threads()} torch thread(s), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, torch {torch.__version__} (shared CPU: times "
        "are indicative only)",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- network: MONAI residual U-Net {list(train.features)}, {train.size} px, "
        f"{train.epochs} epochs in {train.cycles} cosine cycles (ensemble of {train.cycles}), "
        f"seed {train.seed}",
        "- split: 80/20 by subject (stable hash); Dice on held-out subjects, both-empty = 1",
        "",
        "| set | prompt | train subj / img | pseudo found | pseudo Dice (train) "
        "| test subj / img | cascade Dice | weak Dice | cascade s/img | weak s/img "
        "| label + train min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['prompt']} | {r['train_subjects']} / {r['train_images']} "
            f"| {r['pseudo_found']} | {r['pseudo_dice']:.3f} "
            f"| {r['test_subjects']} / {r['test_images']} | {r['cascade_dice']:.3f} "
            f"| {r['weak_dice']:.3f} | {r['cascade_s']:.2f} | {r['weak_s']:.3f} "
            f"| {r['train_min']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--sets", nargs="+", default=["hc18", "cxr_lungs"],
                        choices=sorted(PROMPTS))
    parser.add_argument("--method", default="medclipsam",
                        help="teacher: any registry method but 'weak' (default %(default)s)")
    parser.add_argument("--text-model", default="builtin",
                        help="the cascade's text model; for honest held-out figures, one trained "
                             "without the held-out subjects (scripts/train_grounding.py)")
    parser.add_argument("--max-train", type=int, default=None, metavar="N")
    parser.add_argument("--max-test", type=int, default=None, metavar="N")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None,
                        help="default runs/bench_weak/<method>")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    out = args.out or Path("runs") / "bench_weak" / args.method
    train = WeakTrainConfig(size=args.size, epochs=args.epochs, cycles=args.cycles,
                            seed=args.seed)
    config = run_config(args.method, text_model=args.text_model)
    models = load_models(config.models, with_text=args.method not in TEXT_FREE_METHODS)
    pipeline = build_pipeline(config, models)
    rows = []
    for name in args.sets:
        rows.append(bench_set(args.data / name, PROMPTS[name], pipeline, models.segmenter,
                              train, out, args.max_train, args.max_test))
        print(f"{name}: cascade {rows[-1]['cascade_dice']:.3f}, weak {rows[-1]['weak_dice']:.3f}",
              file=sys.stderr)
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    text = report(rows, args.method, train, command)
    write_text_atomic(out / "report.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
