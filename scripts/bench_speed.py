"""What a user waits for, measured through the documented commands in fresh processes.

    .venv/bin/python scripts/bench_speed.py DATA_ROOT [--label current] [--src DIR]

Writes ``docs/results/speed/<label>.json`` (then ``scripts/make_tables.py`` renders it):

- ``help``: wall time of ``clipsam --help`` (median of ``--repeats`` fresh processes);
- ``one_image``: wall time of ``clipsam segment IMAGE -p PROMPT -o OUT --overwrite`` for the
  shipped example, caches warm (one untimed run first), median of ``--repeats``;
- ``profile``: the same work step by step in one fresh process (imports, settings and file
  hashes, model loading, reading, segmenting with the pipeline's own stage timings, writing,
  interpreter exit), median over ``--repeats`` processes;
- ``segment_folder`` / ``eval_folder``: ``clipsam segment`` on a folder of ``--folder-size``
  held-out fetal-head images and ``clipsam eval --subset test --limit N`` on the same set: wall
  time per image against the pipeline's own time per image (its ``total`` stage timing, or
  eval's ``seconds_per_image``);
- ``salip``: ``clipsam eval --method salip`` seconds per image against one encoder pass
  (``encoder_pass``: median ``encode`` of the loaded segmenter on the same images, same run).

``--src DIR`` runs another checkout's ``src`` (e.g. a ``git worktree`` of an earlier commit)
with this environment, to measure before and after on one machine in one session.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
EXAMPLE = ROOT / "examples" / "images" / "002_HC.png"
PROMPT = "fetal head"

PROFILE = r"""
import json, sys, time
t0 = float(sys.argv[1]); marks = {}
def mark(name): marks[name] = time.time() - t0 - sum(marks.values())
mark("interpreter")
import clipsam.apps.cli
from clipsam.api import Segmenter, run_config
from clipsam.apps.batch import InputImage, SegmentJob, write_outputs
from clipsam.io import read_image
from clipsam.pipelines.provenance import run_identity
mark("imports")
config = run_config("medclipsam")
settings = run_identity(config).key
mark("settings_and_hashes")
segmenter = Segmenter(config)
mark("load_models")
path = __import__("pathlib").Path(sys.argv[2])
image = read_image(path)
mark("read_image")
results = segmenter.segment(image, [sys.argv[3]])
mark("segment")
out = __import__("pathlib").Path(sys.argv[4])
write_outputs(InputImage(path, path.stem), SegmentJob((sys.argv[3],), out, settings, True),
              image, results)
mark("write_outputs")
print("PROFILE", json.dumps({"marks": marks, "stages": results[0].provenance["timings"]}))
"""


def environment(src: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return env


def clipsam_command(*args: str) -> list[str]:
    return [PYTHON, "-m", "clipsam.apps.cli", *args]


def wall(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def median_wall(command: list[str], env: dict[str, str], repeats: int) -> float:
    return statistics.median(wall(command, env) for _ in range(repeats))


def profile(env: dict[str, str], out: Path, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        start = time.time()
        done = subprocess.run([PYTHON, "-c", PROFILE, str(start), str(EXAMPLE), PROMPT,
                               str(out)], env=env, check=True, capture_output=True, text=True)
        total = time.time() - start
        line = next(x for x in done.stdout.splitlines() if x.startswith("PROFILE "))
        run = json.loads(line[len("PROFILE "):])
        run["marks"]["interpreter_exit"] = total - sum(run["marks"].values())
        run["total"] = total
        runs.append(run)
    marks = {k: statistics.median(r["marks"][k] for r in runs) for k in runs[0]["marks"]}
    stages = {k: statistics.median(r["stages"][k] for r in runs) for k in runs[0]["stages"]}
    return {"marks": marks, "stages": stages,
            "total": statistics.median(r["total"] for r in runs)}


def held_out_images(data: Path, count: int) -> list[Path]:
    from clipsam.io.labelled_sets import list_samples
    from clipsam.io.splits import split_of

    samples = [s for s in list_samples(data / "hc18") if split_of(s) == "test"]
    return [s.image_path for s in samples[:count]]


def segment_folder(images: list[Path], env: dict[str, str], work: Path) -> dict:
    folder = work / "folder"
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        (folder / image.name).symlink_to(image.resolve())
    out = work / "folder_out"
    seconds = wall(clipsam_command("segment", str(folder), "-q", "-p", PROMPT, "-o", str(out),
                                   "--overwrite"), env)
    totals = []
    for record in out.glob("*.json"):
        results = json.loads(record.read_text())["results"]
        totals.append(sum(r["provenance"]["timings"]["total"] for r in results))
    return {"n": len(images), "n_records": len(totals), "wall_seconds": seconds,
            "wall_per_image": seconds / len(images),
            "pipeline_per_image": statistics.mean(totals) if totals else None}


def eval_run(data: Path, method: str, limit: int, env: dict[str, str], out: Path) -> dict:
    command = clipsam_command("-q", "eval", str(data / "hc18"), "--subset", "test",
                              "--method", method, "--prompt", PROMPT, "--limit", str(limit),
                              "--out", str(out), "--overwrite")
    seconds = wall(command, env)
    summary = json.loads((out / "summary.json").read_text())
    return {"n": summary["n_images"], "process_wall_seconds": seconds,
            "wall_per_image": summary["wall_seconds_per_image"],
            "pipeline_per_image": summary["seconds_per_image"],
            "dice_mean": summary["dice_mean"]}


ENCODER_PASS = r"""
import statistics, sys, time
from clipsam.io import read_image
from clipsam.io.image import segmenter_input
from clipsam.pipelines.registry import load_segmenter
from clipsam.config import ModelConfig
segmenter = load_segmenter(ModelConfig())
images = [segmenter_input(read_image(p)) for p in sys.argv[1:]]
segmenter.encode(images[0])
times = []
for image in images:
    start = time.perf_counter(); segmenter.encode(image); times.append(time.perf_counter() - start)
print("ENCODER", statistics.median(times))
"""


def encoder_pass(images: list[Path], env: dict[str, str]) -> float:
    done = subprocess.run([PYTHON, "-c", ENCODER_PASS, *map(str, images)], env=env, check=True,
                          capture_output=True, text=True)
    return float(next(x for x in done.stdout.splitlines() if x.startswith("ENCODER")).split()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the evaluation data root (../shared/data)")
    parser.add_argument("--label", default="current")
    parser.add_argument("--src", type=Path, default=None,
                        help="run this checkout's src instead of the installed clipsam")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder-size", type=int, default=50)
    parser.add_argument("--salip-images", type=int, default=20)
    args = parser.parse_args()
    env = environment(args.src)
    result: dict = {
        "label": args.label, "date": datetime.date.today().isoformat(),
        "command": " ".join(["scripts/bench_speed.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_at_start": os.getloadavg()[0]},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        one = clipsam_command("segment", str(EXAMPLE), "-q", "-p", PROMPT, "-o",
                              str(work / "one"), "--overwrite")
        wall(one, env)  # warm the caches (ONNX graphs, text embeddings, file hashes)
        result["help"] = median_wall(clipsam_command("--help"), env, args.repeats)
        result["one_image"] = median_wall(one, env, args.repeats)
        result["profile"] = profile(env, work / "profile", args.repeats)
        images = held_out_images(args.data, args.folder_size)
        result["segment_folder"] = segment_folder(images, env, work)
        result["eval_folder"] = eval_run(args.data, "medclipsam", args.folder_size, env,
                                         work / "eval")
        result["salip"] = eval_run(args.data, "salip", args.salip_images, env, work / "salip")
        result["encoder_pass"] = encoder_pass(images[:args.salip_images], env)
    result["machine"]["load_average_at_end"] = os.getloadavg()[0]
    target = ROOT / "docs" / "results" / "speed" / f"{args.label}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
