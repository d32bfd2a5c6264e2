"""Images per second of ``clipsam segment`` on the local engine and on Ray, same folder, one run.

    .venv/bin/python scripts/bench_engines.py /work/shared/data/hc18/images -p "fetal head" \
        --limit 8 --workers 2

Both engines write into a fresh temporary folder (``--overwrite`` semantics); wall time includes
model loading (and, for Ray, starting Ray), as a user would see it. Prints one JSON line per
engine and whether their masks agree.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from clipsam.api import Segmenter, run_config
from clipsam.apps.batch import SegmentJob, collect_inputs, run_local
from clipsam.apps.ray_engine import run_ray
from clipsam.pipelines.provenance import run_identity


def masks_agree(first: Path, second: Path) -> bool:
    names = sorted(p.name for p in first.rglob("*_mask.png"))
    return names == sorted(p.name for p in second.rglob("*_mask.png")) and all(
        np.array_equal(np.asarray(Image.open(first / n)), np.asarray(Image.open(second / n)))
        for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("-p", "--prompt", default="fetal head")
    parser.add_argument("--method", default="medclipsam")
    parser.add_argument("--limit", type=int, default=8, help="first N images only")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors")
    parser.add_argument("--ray-address", default=None)
    args = parser.parse_args()

    items = collect_inputs(args.inputs)[: args.limit]
    config = run_config(args.method)
    with tempfile.TemporaryDirectory(prefix="clipsam-bench-") as folder:
        outputs = {name: Path(folder) / name for name in ("local", "ray")}
        for name, out in outputs.items():
            job = SegmentJob((args.prompt,), out, run_identity(config).key, overwrite=True)
            start = time.perf_counter()
            if name == "local":
                summary = run_local(items, job, functools.partial(Segmenter, config))
            else:
                summary = run_ray(items, job, config, address=args.ray_address,
                                  workers=args.workers)
            seconds = time.perf_counter() - start
            print(json.dumps({"engine": name, "images": len(items), "done": summary.done,
                              "failed": len(summary.failed), "seconds": round(seconds, 2),
                              "images_per_second": round(summary.done / seconds, 4),
                              "workers": args.workers if name == "ray" else 1}), flush=True)
        print(json.dumps({"masks_equal": masks_agree(outputs["local"], outputs["ray"])}))


if __name__ == "__main__":
    main()
