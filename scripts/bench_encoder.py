"""Time LiteMedSAM in PyTorch and ONNX Runtime in one run and print a markdown table.

Medians of several runs (after one warm-up) of: the image encoder alone, the full ``encode``
(preprocessing included) and one batched ``predict`` with 1 and with 8 boxes.

    .venv/bin/python scripts/bench_encoder.py [--repeats 5] [--image path.png]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from PIL import Image

from clipsam.models.onnx_session import default_threads
from clipsam.models.sam import load_litemedsam
from clipsam.models.sam.preprocess import prepare_image


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def test_image(path: str | None) -> np.ndarray:
    if path:
        return np.asarray(Image.open(path))
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(540, 800), dtype=np.uint8)


def boxes_for(image: np.ndarray, count: int) -> np.ndarray:
    h, w = image.shape[:2]
    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 0.5, size=(count, 2)) * [w, h]
    sizes = rng.uniform(0.2, 0.5, size=(count, 2)) * [w, h]
    return np.concatenate([corners, corners + sizes], axis=1).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image", default=None, help="image to encode (default: random 540x800)")
    args = parser.parse_args()

    image = test_image(args.image)
    model_input, _ = prepare_image(image, 256, "minmax")
    rows = []
    for runtime in ("torch", "onnx"):
        segmenter = load_litemedsam(runtime=runtime)
        embedding = segmenter.encode(image)
        rows.append((
            runtime,
            median_seconds(lambda s=segmenter: s.runtime.encode(model_input), args.repeats),
            median_seconds(lambda s=segmenter: s.encode(image), args.repeats),
            *(median_seconds(lambda s=segmenter, e=embedding, n=n:
                             s.predict(e, boxes=boxes_for(image, n)), args.repeats)
              for n in (1, 8)),
        ))

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"LiteMedSAM speed, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}\n")
    print(f"- machine: {cpu_name()}, {os.cpu_count()} logical CPUs, load average {load}")
    print(f"- {platform.platform()}, Python {platform.python_version()}, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
          f"{onnxruntime.__version__} ({default_threads()} intra-op threads)")
    print(f"- image {image.shape[1]}x{image.shape[0]}, median of {args.repeats} runs after "
          "one warm-up, seconds\n")
    print("| runtime | encoder network | encode (with preprocessing) | predict 1 box | "
          "predict 8 boxes |")
    print("|---|---|---|---|---|")
    for name, net, full, one, eight in rows:
        print(f"| {name} | {net:.3f} | {full:.3f} | {one:.3f} | {eight:.3f} |")


if __name__ == "__main__":
    main()
