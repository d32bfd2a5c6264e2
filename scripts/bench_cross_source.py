"""Cross-source presence through the product path: each target that other sets' images always
show (``always_shows`` in the concepts table) prompted on those images, and on every set that
cannot show it, with ``clipsam eval --subset test`` (held-out subjects only).

    .venv/bin/python scripts/bench_cross_source.py ../shared/data [--text-model DIR] [--out DIR]

Writes ``OUT/<target set>/<image set>/`` (per_image.csv, summary.json, run.json; the Dice there
is against the image set's *own* target, a shape check: lungs on a JSRT radiograph should
overlap its heart mask little); ``scripts/make_tables.py`` reads the found rates from them. An
image set whose image files are those of the target set, or of an image set already scored for
that target (jsrt_heart and jsrt_clavicles share their radiographs), is scored once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

from clipsam.train.captions import builtin_concepts, cross_source_pairs

ROOT = Path(__file__).resolve().parent.parent


def _image_digests(set_dir: Path) -> frozenset[str]:
    return frozenset(hashlib.sha256(p.read_bytes()).hexdigest()
                     for p in sorted((set_dir / "images").iterdir()) if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder holding the sets (../shared/data)")
    parser.add_argument("--text-model", default="builtin",
                        help="grounding model (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/cross_source",
                        help="result folder")
    parser.add_argument("--embedding-cache", type=Path, default=Path("runs/eval_emb"),
                        help="embedding store shared with the other benchmarks")
    args = parser.parse_args()
    prompts = json.loads((ROOT / "scripts/benchmark_prompts.json").read_text())
    digests: dict[str, frozenset[str]] = {}
    scored: dict[str, list[frozenset[str]]] = {}
    for target, image_set, _shown in cross_source_pairs(builtin_concepts()):
        for name in (target, image_set):
            if name not in digests:
                digests[name] = _image_digests(args.data / name)
        done = scored.setdefault(target, [digests[target]])
        if digests[image_set] in done:
            continue
        done.append(digests[image_set])
        command = [sys.executable, "-m", "clipsam.apps.cli", "-q", "eval",
                   str(args.data / image_set), "--subset", "test", "--method", "medclipsam",
                   "--prompt", prompts[target], "--text-model", args.text_model,
                   "--embedding-cache", str(args.embedding_cache),
                   "--out", str(args.out / target / image_set)]
        print(" ".join(command[3:]), flush=True)
        subprocess.run(command, check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
