"""Choose the settings that apply to every concept on calibration subjects (or train-part
images), never on held-out ones, through the method users run (clipsam.train.choices).

    OMP_NUM_THREADS=1 CLIPSAM_THREADS=1 .venv/bin/python scripts/choose_settings.py \\
        --data ../shared/data --subset calibration --embedding-cache runs/emb_cache

Each setting (all of ``clipsam.train.choices.SETTINGS`` by default) writes
``OUT/<setting>/<subset>/<candidate>/<set>/per_image.csv`` (and the harness's run.json and
summary.json; a rerun resumes them) and ``OUT/<setting>/choice.json``;
``scripts/make_tables.py`` turns the choices into the table of docs/BENCHMARKS.md. The prompt
of each set is the benchmark's (``scripts/benchmark_prompts.json``). A chosen value that
differs from the configuration's default is reported, not applied: change the default in
``clipsam.config`` by hand.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from clipsam.config import ModelConfig
from clipsam.errors import ClipsamError
from clipsam.train.choices import SETTINGS, SUBSETS, choose, setting_named

PROMPTS: dict[str, str] = json.loads((Path(__file__).parent / "benchmark_prompts.json").read_text())
PROG = "choose_settings.py"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="folder holding one labelled set per prompt of "
                             "benchmark_prompts.json")
    parser.add_argument("--setting", nargs="+", default=list(SETTINGS), metavar="NAME",
                        help=f"the settings to choose (default: all: {', '.join(SETTINGS)})")
    parser.add_argument("--subset", choices=SUBSETS, default="calibration",
                        help="the images choices are made on: 'calibration' subjects (never "
                             "used for the grounding model's gradient steps) or the whole "
                             "'train' part; 'test' is refused")
    parser.add_argument("--sets", nargs="+", default=list(PROMPTS), metavar="SET",
                        help="only these sets (default: every set of benchmark_prompts.json)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="at most N images per set (to check the run, not to choose)")
    parser.add_argument("--embedding-cache", type=Path, default=None, metavar="DIR",
                        help="the embedding store (every image encoded once for all "
                             "candidates and kept across runs)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="intra-op threads of the models (default: every core, or "
                             "$CLIPSAM_THREADS)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/choices"),
                        help="one folder per setting is written here (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="score every image again instead of resuming the per-image files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        unknown = sorted(set(args.sets) - set(PROMPTS))
        if unknown:
            raise ClipsamError(f"no benchmark prompt for {', '.join(unknown)}; sets: "
                               f"{', '.join(PROMPTS)}")
        if args.limit is not None and args.limit < 1:
            raise ClipsamError(f"--limit must be at least 1, got {args.limit}")
        settings = [setting_named(name) for name in args.setting]
        models = ModelConfig(embedding_cache=args.embedding_cache, threads=args.threads)
        command = " ".join(["scripts/choose_settings.py", *map(shlex.quote, sys.argv[1:])])
        for setting in settings:
            record = choose(setting, args.data, {s: PROMPTS[s] for s in args.sets},
                            args.subset, args.out / setting.name, models, limit=args.limit,
                            overwrite=args.overwrite, command=command)
            means = ", ".join(f"{name} {c['mean_dice']:.3f}"
                              for name, c in record["candidates"].items())
            change = ("" if record["chosen"] == record["default"] else
                      f" (differs from the default {record['default']}: change "
                      f"{record['field']} in clipsam.config)")
            print(f"{setting.name}: {means}; chosen {record['chosen']}{change}")
    except ClipsamError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
