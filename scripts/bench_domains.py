"""Leave one domain out inside a target (issue #28): a set whose images come in kinds named
by a ``meta.csv`` column (``dsb_nuclei``'s ``channels``: gray fluorescence, RGB stained tissue
and brightfield), trained on one kind and scored on the other, against the same recipe
trained on both.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_domains.py ../shared/data/dsb_nuclei \\
        --column channels --recipes domains --embedding-cache runs/emb_cache \\
        --out docs/results/domains/dsb_nuclei

Through the documented commands. For each recipe, ``clipsam finetune --recipe R --data SET
--subset train`` trains one model on every kind (``both``) and one per kind with the other
kinds' images left out (``--exclude`` a folder of links to them: ``only-<kind>``); the set
alone is trained, so the models are smaller in what they know than the shipped one. ``clipsam
eval --subset test`` then scores each kind's held-out images (a folder of links to them, with
their ``meta.csv`` rows) with each model: the same images for every model, so the differences
are paired. Models go to ``--work``; results to ``OUT/<recipe>/<model>/<kind>/`` (summary.json,
per_image.csv, run.json) and each model's training record to ``OUT/<recipe>/<model>.json``;
a model whose record exists is not trained again (an interrupted training resumes from its
checkpoint), a run whose summary exists is not made again. ``scripts/make_tables.py`` makes
the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

from clipsam.io.labelled_sets import META_NAME, Sample, list_samples, write_meta_subset
from clipsam.io.splits import split_of


def kinds_of(set_dir: Path, column: str) -> dict[str, list[Sample]]:
    """Each value of ``column`` in the set's meta.csv -> its samples (sorted by value)."""
    with (set_dir / META_NAME).open(newline="", encoding="utf-8") as handle:
        value = {row["id"]: row[column] for row in csv.DictReader(handle)}
    kinds: dict[str, list[Sample]] = {}
    for sample in list_samples(set_dir):
        kinds.setdefault(value[sample.image_id], []).append(sample)
    return dict(sorted(kinds.items()))


def link_set(set_dir: Path, samples: list[Sample], folder: Path) -> None:
    """``folder`` as a set of links: images/, masks/ and the samples' meta.csv rows."""
    if folder.exists():
        shutil.rmtree(folder)
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    for sample in samples:
        (folder / "images" / sample.image_path.name).symlink_to(sample.image_path.resolve())
        (folder / "masks" / sample.mask_path.name).symlink_to(sample.mask_path.resolve())
    write_meta_subset(set_dir, {s.image_id for s in samples}, folder)


def clipsam(*argv: str) -> None:
    print("$ clipsam " + " ".join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "clipsam.apps.cli", *argv], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a set folder with a meta.csv")
    parser.add_argument("--column", required=True, help="the meta.csv column naming the kind")
    parser.add_argument("--prompt", default=None, help="the set's target (default: its "
                        "benchmark prompt, scripts/benchmark_prompts.json)")
    parser.add_argument("--recipes", nargs="+", default=["domains"])
    parser.add_argument("--embedding-cache", type=Path, required=True, metavar="DIR")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/domains"))
    parser.add_argument("--threads", default="1")
    args = parser.parse_args()
    prompts = json.loads((Path(__file__).parent / "benchmark_prompts.json").read_text())
    prompt = args.prompt or prompts[args.data.name]
    kinds = kinds_of(args.data, args.column)
    work = args.work / args.data.name
    for kind, samples in kinds.items():  # links: what to leave out, and what to score
        link_set(args.data, samples, work / "leave-out" / kind)
        link_set(args.data, [s for s in samples if split_of(s) == "test"],
                 work / "score" / kind)
    cache = ("--embedding-cache", str(args.embedding_cache), "--threads", args.threads)
    for recipe in args.recipes:
        models = {"both": []} | {f"only-{kind}": [k for k in kinds if k != kind]
                                 for kind in kinds}
        for name, left_out in models.items():
            model = args.work / args.data.name / recipe / name
            record = args.out / recipe / f"{name}.json"
            if not record.is_file():
                exclude = [str(work / "leave-out" / k) for k in left_out]
                clipsam("finetune", "-q", "--recipe", recipe, "--data", str(args.data),
                        "--subset", "train", *(("--exclude", *exclude) if exclude else ()),
                        "--out", str(model), *cache)
                record.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(model / "training.json", record)
            for kind in kinds:
                out = args.out / recipe / name / kind
                if not (out / "summary.json").is_file():
                    clipsam("eval", "-q", str(work / "score" / kind), "--subset", "test",
                            "--method", "medclipsam", "--prompt", prompt, "--text-model",
                            str(model), "--out", str(out), "--overwrite", *cache)


if __name__ == "__main__":
    main()
