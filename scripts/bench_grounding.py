"""Compare map -> boxes rules, box refinement and mask sources, and measure presence, on the
held-out split, through the library's MedCLIP-SAM pipeline.

    .venv/bin/python scripts/bench_grounding.py --data ../shared/data \\
        --embedding-cache runs/emb_cache --out docs/results/grounding

Every test-split image (``clipsam.io.splits.split_of``) is encoded once by LiteMedSAM (or its
embedding taken from ``--embedding-cache``, the store ``clipsam eval`` uses) and run through
``MedClipSamPipeline`` once per candidate configuration, with that embedding passed in.
Writes ``candidates.csv`` (one row per candidate and image), ``presence.csv`` (the presence
score of every test image for every built-in concept) and ``run.json``;
``scripts/make_tables.py`` turns them into the tables of docs/BENCHMARKS.md.

This measures on held-out images; it chooses nothing. The map -> boxes rule and ``refine`` are
chosen on calibration subjects by ``scripts/choose_settings.py`` (``clipsam.train.choices``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from clipsam.config import MapBoxRule, MedClipSamConfig, ModelConfig
from clipsam.eval.metrics import dice
from clipsam.io.atomic import write_text_atomic
from clipsam.io.image import segmenter_input
from clipsam.io.labelled_sets import list_samples
from clipsam.io.masks import read_mask
from clipsam.io.read import read_image
from clipsam.io.splits import split_of
from clipsam.models.grounding import load_grounding_model
from clipsam.pipelines.medclipsam import MedClipSamPipeline
from clipsam.pipelines.registry import load_segmenter
from clipsam.train.captions import builtin_concepts

BASE = MedClipSamConfig()
CANDIDATES: dict[str, MedClipSamConfig] = {
    "default": BASE,
    "level-0.5": replace(BASE, map_level=0.5),
    "margin-0": replace(BASE, box_margin=0.0),
    "keep-30%": replace(BASE, box_rule=MapBoxRule(keep_fraction=0.3)),
    "largest-only": replace(BASE, box_rule=MapBoxRule(keep_fraction=1.0)),
    "core-0.6": replace(BASE, box_rule=MapBoxRule(peak_fraction=0.6)),
    "refine": replace(BASE, refine=True),
    "segmenter-only": replace(BASE, mask_source="segmenter"),
    "map-only": replace(BASE, mask_source="map"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--embedding-cache", type=Path, default=Path("runs/emb_cache"),
                        metavar="DIR")
    parser.add_argument("--model", type=Path, default=None, help="default: the built-in model")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    args = parser.parse_args()
    concepts = builtin_concepts()
    segmenter = load_segmenter(ModelConfig(embedding_cache=args.embedding_cache))
    model = load_grounding_model(args.model, segmenter=segmenter)
    pipelines = {name: MedClipSamPipeline(segmenter, model, CANDIDATES[name])
                 for name in args.candidates}
    samples = [s for name in sorted(concepts) if (args.data / name).is_dir()
               for s in list_samples(args.data / name)
               if split_of(s) == "test"]
    rows, presence = [], []
    for sample in tqdm(samples, desc="held-out images"):
        image = segmenter_input(read_image(sample.image_path))
        embedding = segmenter.encode(image)
        reference = read_mask(sample.mask_path)
        prompt = concepts[sample.set_name].target
        for name, pipeline in pipelines.items():
            start = time.perf_counter()
            result = pipeline.run(image, prompt, embedding=embedding)
            rows.append({"candidate": name, "set": sample.set_name, "id": sample.image_id,
                         "dice": f"{dice(result.mask, reference):.6f}",
                         "found": result.found, "gt_empty": not reference.any(),
                         "boxes": len(result.boxes),
                         "seconds": f"{time.perf_counter() - start:.4f}"})
        for other, concept in sorted(concepts.items()):
            presence.append({"set": sample.set_name, "id": sample.image_id, "concept": other,
                             "own": other == sample.set_name,
                             "may_show": other in concepts[sample.set_name].may_show,
                             "gt_empty": not reference.any(),
                             "score": f"{model.presence_score(embedding, concept.target):.6f}",
                             "threshold": f"{model.threshold_for(concept.target):.6f}"})
    args.out.mkdir(parents=True, exist_ok=True)
    for file, table in (("candidates.csv", rows), ("presence.csv", presence)):
        text = [",".join(table[0])] + [",".join(str(v) for v in r.values()) for r in table]
        write_text_atomic(args.out / file, "\n".join(text) + "\n")
    run = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "model": str(args.model or "builtin"), "images": len(samples),
           "candidates": {n: repr(CANDIDATES[n]) for n in args.candidates},
           "command": "scripts/bench_grounding.py " + " ".join(
               f"--{k} {v}" for k, v in (("data", args.data),
                                          ("embedding-cache", args.embedding_cache),
                                          ("out", args.out)))}
    write_text_atomic(args.out / "run.json", json.dumps(run, indent=1) + "\n")
    print(f"wrote {args.out}: {len(samples)} images x {len(pipelines)} candidates")


if __name__ == "__main__":
    main()
