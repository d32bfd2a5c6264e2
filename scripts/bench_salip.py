"""Compare SaLIP rules with the built-in model on *training* images (the rule is chosen here,
then scored on held-out subjects by `scripts/bench_quality.sh`), through the library's
SalipPipeline.

    .venv/bin/python scripts/bench_salip.py --data ../shared/data \\
        --embedding-cache runs/emb_cache --out docs/results/salip

Per set, ``--per-set`` images with a target from the train part of the subject split (a seeded
shuffle) are run once per proposal / map candidate; each run also scores the rule it replaced
for the final decode (each retrieved box's mask cut to its largest component), from the same
retrieved boxes. Candidates, each adding one change to the one before:
``previous`` (feature boxes as they are, map = mean over the prompt library's sentences, masks
cut), ``grown-boxes`` (each box also decoded grown by 20 % per side), ``prompt-map`` (the map of
the prompt alone) and ``default`` (what the library does: the same, masks not cut). Writes
``candidates.csv`` (one row per candidate and image) and ``run.json``.

The rules compared here that the library keeps as settings (the number of feature boxes, the
grown boxes) are chosen by ``scripts/choose_settings.py`` (``clipsam.train.choices``) on
calibration subjects; this script keeps the history of the other rules.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clipsam.config import ModelConfig, SalipConfig
from clipsam.eval.dataset import load_case, open_dataset, subject_subset
from clipsam.eval.metrics import dice
from clipsam.io.atomic import write_text_atomic
from clipsam.io.image import segmenter_input
from clipsam.pipelines.common import segment_boxes
from clipsam.pipelines.prompts import prompt_ensemble
from clipsam.pipelines.registry import load_models
from clipsam.pipelines.salip import SalipPipeline
from clipsam.pipelines.timing import StageTimer
from clipsam.proposals.generate import BOX_PROMPT_DEFAULTS

# The prompt of every set, as scripts/bench_quality.sh scores the chosen rule on held-out subjects.
PROMPTS: dict[str, str] = json.loads((Path(__file__).parent / "benchmark_prompts.json").read_text())
# candidate -> (pipeline run, masks cut to their largest component)
CANDIDATES = {"previous": ("as-is", True), "grown-boxes": ("grown", True),
              "prompt-map": ("default", True), "default": ("default", False)}


class LibraryMap(SalipPipeline):
    """The previous map rule: the mean over the prompt and its library's sentences."""

    def text_map(self, embedding, prompt):
        texts = prompt_ensemble(prompt, True)
        return np.mean([self.text_model.similarity_map(embedding, t) for t in texts], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--embedding-cache", type=Path, default=Path("runs/emb_cache"),
                        metavar="DIR")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-set", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    models = load_models(ModelConfig(embedding_cache=args.embedding_cache, threads=1))
    as_is = SalipConfig(proposals=replace(BOX_PROMPT_DEFAULTS, box_margins=(0.0,)))
    runs = {"as-is": LibraryMap(models.segmenter, models.text, as_is),
            "grown": LibraryMap(models.segmenter, models.text),
            "default": SalipPipeline(models.segmenter, models.text)}
    rows = []
    for set_name, prompt in PROMPTS.items():
        dataset = subject_subset(open_dataset(args.data / set_name), "train")
        order = np.random.default_rng(args.seed).permutation(len(dataset.cases))
        cases = (load_case(dataset.cases[i]) for i in order)
        chosen = list(islice((case for case in cases if case.mask.any()), args.per_set))
        for case in tqdm(chosen, desc=set_name):
            image = segmenter_input(case.image)
            embedding = models.segmenter.encode(image)
            for run_name, pipeline in runs.items():
                start = time.perf_counter()
                result = pipeline.run(image, prompt, embedding=embedding)
                seconds = time.perf_counter() - start
                cut = (segment_boxes(models.segmenter, embedding, result.boxes, StageTimer())[0]
                       if len(result.boxes) else result.mask)
                for candidate, (run, cuts) in CANDIDATES.items():
                    if run == run_name:
                        rows.append({"candidate": candidate, "set": set_name, "id": case.case.id,
                                     "dice": round(dice(cut if cuts else result.mask,
                                                        case.mask), 6),
                                     "gt_empty": False, "seconds": round(seconds, 4)})
    rows.sort(key=lambda r: list(CANDIDATES).index(r["candidate"]))
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(str(r[h]) for h in header) for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "candidates.csv", "\n".join(lines) + "\n")
    write_text_atomic(args.out / "run.json", json.dumps(
        {"command": "scripts/bench_salip.py", "part": "train", "per_set": args.per_set,
         "seed": args.seed, "date": time.strftime("%Y-%m-%d"), "prompts": PROMPTS,
         "candidates": list(CANDIDATES)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
