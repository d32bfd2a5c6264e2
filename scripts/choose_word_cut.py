"""Choose the similarity cut and ambiguity margin by which prompts reach trained concepts, on
the written paraphrase list (one half chooses, the other half is reported).

    .venv/bin/python scripts/choose_word_cut.py --out docs/results/words/cut.json

Text only: the sentence encoder and the model's concept phrases, no image. The library code is
:mod:`clipsam.train.word_cut`; the chosen rule becomes ``WordRule``'s default
(:mod:`clipsam.models.grounding.words`) by hand.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from clipsam.eval.paraphrases import load_paraphrases, paraphrase_path
from clipsam.io.atomic import write_text_atomic
from clipsam.io.record import software_versions
from clipsam.models.grounding import load_grounding_model
from clipsam.models.grounding.model import CONFIG_FILE
from clipsam.models.weights import sha256_of
from clipsam.train.word_cut import word_cut_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="default: the built-in model")
    parser.add_argument("--list", type=Path, default=None,
                        help="default: the shipped clipsam/data/paraphrases.json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model = load_grounding_model(args.model)
    list_path = args.list or paraphrase_path()
    report = word_cut_report(model, load_paraphrases(list_path))
    encoder = model.text_encoder
    report["made_by"] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "scripts/choose_word_cut.py " + " ".join(
            f"--{k} {v}" for k, v in (("model", args.model), ("list", args.list),
                                       ("out", args.out)) if v is not None),
        "model": str(args.model or "builtin"),
        "model_config_sha256": sha256_of(model.source_dir / CONFIG_FILE),
        "paraphrase_list": list_path.name,
        "paraphrase_list_sha256": sha256_of(list_path),
        "text_encoder": str(encoder.folder.name),
        "text_encoder_cache_key": encoder.cache_folder.name if encoder.cache_folder else None,
        "versions": software_versions(),
    }
    write_text_atomic(args.out, json.dumps(report, indent=1) + "\n")
    rule, choose, held = report["rule"], report["choose"], report["report"]
    print(f"cut {rule['cut']}, margin {rule['margin']}: choosing half {choose['accuracy']} "
          f"({choose['correct']}/{choose['n']}), reported half {held['accuracy']} "
          f"({held['correct']}/{held['n']})")


if __name__ == "__main__":
    main()
