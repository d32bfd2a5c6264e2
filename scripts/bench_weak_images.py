"""The weak-supervision student against the number of unlabelled images (issue #27).

    OMP_NUM_THREADS=1 CLIPSAM_THREADS=1 .venv/bin/python scripts/bench_weak_images.py \\
        --data ../shared/data --sets hc18 --counts 25 50 100 --out docs/results/weak/image_count

Through the documented commands, one after the other, single-threaded. For each set, the
images of the train part of the subject split are put in a fixed order (a hash of their ids);
for each count N, a folder of links to the first N (with their ``meta.csv`` rows, so the
student's validation hold-out is by subject) goes to ``clipsam weak-train`` with its defaults
(the shipped text model and MedCLIP-SAM label them; expert masks are never read; the
pseudo-masks of the previous count are copied in, so each image is labelled once). ``clipsam
eval --subset test --method weak`` then scores the student on held-out subjects against the
expert masks, beside its teacher (``--method medclipsam``, once per set).

Writes into ``--out``: ``<set>-<N>.json`` (the model's ``config.json``: training loss and
agreement with the teacher at every evaluation, held-out images, warning),
``eval/<set>-<N>/`` and ``eval/<set>-teacher/`` (``summary.json``, ``per_image.csv``) and
``results.csv`` (one row per set and count, with the CPU time of each command and the load
average before and after it). Model folders go to ``--work``; a count whose ``<set>-<N>.json``
exists is not trained again.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from clipsam.io.atomic import write_text_atomic
from clipsam.io.labelled_sets import list_samples, write_meta_subset
from clipsam.io.splits import split_of

PROMPTS = json.loads((Path(__file__).parent / "benchmark_prompts.json").read_text())
COLUMNS = ("set", "images", "used", "held_out", "steps", "agreement", "warning",
           "train_minutes", "weak_train_cpu_minutes", "student_dice", "student_n",
           "teacher_dice", "teacher_n", "load_before", "load_after", "date")


def ordered_train_images(set_dir: Path) -> list:
    """The train part's samples in a fixed order: sha256 of each image id."""
    samples = [s for s in list_samples(set_dir) if split_of(s) == "train"]
    return sorted(samples, key=lambda s: hashlib.sha256(s.image_id.encode()).hexdigest())


def link_folder(set_dir: Path, samples: list, folder: Path) -> None:
    """``folder`` with a link to each sample's image and their rows of the set's meta.csv."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for sample in samples:
        (folder / sample.image_path.name).symlink_to(sample.image_path.resolve())
    write_meta_subset(set_dir, {s.image_id for s in samples}, folder)


def clipsam(*argv: str) -> tuple[float, float, float]:
    """Run ``clipsam ARGV``; (CPU minutes of the command, load average before, after)."""
    before = os.getloadavg()[0]
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [sys.executable, "-m", "clipsam.apps.cli", *argv]
    print("$ clipsam " + " ".join(argv), flush=True)
    subprocess.run(command, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime) / 60
    return cpu, before, os.getloadavg()[0]


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--sets", nargs="+", required=True)
    parser.add_argument("--counts", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--out", type=Path, default=Path("docs/results/weak/image_count"))
    parser.add_argument("--work", type=Path, default=Path("runs/weak_images"))
    args = parser.parse_args()
    threads = ("--threads", "1")
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.csv"
    if results.is_file():
        with results.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    for name in args.sets:
        set_dir, prompt = args.data / name, PROMPTS[name]
        samples = ordered_train_images(set_dir)
        teacher_dir = args.out / "eval" / f"{name}-teacher"
        if not (teacher_dir / "summary.json").is_file():
            clipsam("eval", "-q", str(set_dir), "--subset", "test", "--method", "medclipsam",
                    "--prompt", prompt, "--out", str(teacher_dir), *threads)
        teacher = summary(teacher_dir)
        previous = None
        for count in sorted(args.counts):
            if count > len(samples):
                print(f"{name}: {len(samples)} train images, fewer than {count}: skipped")
                continue
            record = args.out / f"{name}-{count}.json"
            model = args.work / f"{name}-{count}" / "model"
            if not record.is_file():
                images = args.work / f"{name}-{count}" / "images"
                link_folder(set_dir, samples[:count], images)
                if model.exists():
                    shutil.rmtree(model)
                if previous is not None:  # the same teacher's masks: reused, not remade
                    shutil.copytree(previous / "pseudo", model / "pseudo")
                cpu, load_before, load_after = clipsam(
                    "weak-train", "-q", str(images), "-p", prompt, "--out", str(model),
                    *threads)
                shutil.copy(model / "config.json", record)
                eval_dir = args.out / "eval" / f"{name}-{count}"
                clipsam("eval", "-q", str(set_dir), "--subset", "test", "--method", "weak",
                        "--model", str(model), "--prompt", prompt, "--out", str(eval_dir),
                        "--overwrite", *threads)
                config, student = json.loads(record.read_text()), summary(eval_dir)
                rows = [row for row in rows if (row["set"], int(row["images"])) != (name, count)]
                rows.append({
                    "set": name, "images": count,
                    "used": sum(item["used"] for item in config["data"]),
                    "held_out": sum(item["held_out"] for item in config["data"]),
                    "steps": config["steps_completed"], "agreement": config["agreement"],
                    "warning": config["warning"],
                    "train_minutes": round(config["train_seconds"] / 60, 2),
                    "weak_train_cpu_minutes": round(cpu, 2),
                    "student_dice": student["dice_mean"], "student_n": student["n"],
                    "teacher_dice": teacher["dice_mean"], "teacher_n": teacher["n"],
                    "load_before": load_before, "load_after": load_after,
                    "date": time.strftime("%Y-%m-%d %H:%M")})
                rows.sort(key=lambda row: (row["set"], int(row["images"])))
                table = io.StringIO()
                writer = csv.DictWriter(table, fieldnames=COLUMNS, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
                write_text_atomic(results, table.getvalue())
            previous = model


if __name__ == "__main__":
    main()
