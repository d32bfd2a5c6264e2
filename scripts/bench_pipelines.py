"""Speed of each pipeline, stage by stage, against one encoder pass, measured in one run.

    .venv/bin/python scripts/bench_pipelines.py /work/shared/data --per-set 4

For every image the LiteMedSAM encoder runs once (that time is the reference); each pipeline then
runs on the same cached embedding, so its stage times add up to what it costs beyond the encoder.
Prints a markdown table of per-stage medians and the ratio (encoder + stages) / encoder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

from clipsam.config import ModelConfig, RunConfig
from clipsam.io.image import segmenter_input
from clipsam.io.read import read_image
from clipsam.pipelines.registry import SERVED_METHODS, build_pipeline, load_models

ALL_PROMPTS = json.loads((Path(__file__).parent / "benchmark_prompts.json").read_text())
PROMPTS = {name: ALL_PROMPTS[name]
           for name in ("hc18", "busi", "cxr_lungs", "lgg_flair", "kvasir_polyp")}
METHODS = SERVED_METHODS  # every method that runs on the installed models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="root with one folder per set")
    parser.add_argument("--per-set", type=int, default=4)
    parser.add_argument("--runtime", default="auto")
    args = parser.parse_args()
    models = load_models(ModelConfig(runtime=args.runtime))
    pipelines = {m: build_pipeline(RunConfig(method=m), models) for m in METHODS}
    encode: list[float] = []
    stages: dict[str, dict[str, list[float]]] = {m: {} for m in METHODS}
    for set_name, prompt in PROMPTS.items():
        images = sorted((args.data / set_name / "images").glob("*.png"))[: args.per_set]
        for path in images:
            pixels = segmenter_input(read_image(path))
            start = time.perf_counter()
            embedding = models.segmenter.encode(pixels)
            encode.append(time.perf_counter() - start)
            for method, pipeline in pipelines.items():
                result = pipeline.run(pixels, prompt, embedding=embedding)
                for stage, seconds in result.timings.items():
                    stages[method].setdefault(stage, []).append(seconds)
    enc = statistics.median(encode)
    print(f"Pipeline speed, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
          f"{len(encode)} images ({args.per_set} per set), runtime {args.runtime}")
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"- median encoder pass: {enc:.3f} s\n")
    print("| method | stages after encoding (median s) | total incl. encoder (median s) | "
          "ratio to one encoder pass |")
    print("|---|---|---|---|")
    for method, per_stage in stages.items():
        parts = ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in per_stage.items()
                          if k != "total")
        total = enc + statistics.median(per_stage["total"])
        print(f"| {method} | {parts} | {total:.3f} | {total / enc:.2f} |")


if __name__ == "__main__":
    main()
