"""Regenerate the tables and figures of the documents from the result files under docs/results/.

    .venv/bin/python scripts/make_tables.py [--check]

Documents (``DOCS``): docs/BENCHMARKS.md, docs/EXPERIMENTS.md, README.md and the grounding
model card.
Each table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` markers and is
rewritten from its source files; nothing in a table is typed by hand. A figure in prose is a
number right after a ``<!-- fig:FAMILY ARG ... [FORMAT] -->`` marker (shell-style arguments,
FORMAT such as ``.2f`` or ``+.3f``; floats default to ``.3f``): the number is rewritten from
``FIGURES[FAMILY](*ARGS)``, so the marker hides in the rendered page and the number is all a
reader sees. A decimal number outside a table, a figure, code or an ``ALLOWED`` phrase is
reported as unmarked. ``--check`` exits 1 when a document is not what the result files give or
holds an unmarked decimal (for CI).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shlex
import sys
from collections import defaultdict
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

from clipsam.eval.stats import paired_difference
from clipsam.eval.volume_bench import compare as compare_volumes
from clipsam.eval.volume_bench import read_runs as read_volume_runs
from clipsam.eval.volume_bench import table as volume_table
from clipsam.train.calibrate import threshold_at_recall

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
DOCS = (ROOT / "docs" / "BENCHMARKS.md", ROOT / "docs" / "EXPERIMENTS.md", ROOT / "README.md",
        ROOT / "src" / "clipsam" / "data" / "grounding" / "MODEL_CARD.md")
SETS = ("hc18", "cxr_lungs", "jsrt_heart", "isic_skin", "kvasir_polyp", "busi", "ddti_thyroid",
        "dsb_nuclei", "lgg_flair", "ddsm_pectoral", "jsrt_clavicles")


@cache
def _rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file (read once per run; callers do not modify them)."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _true(value: str) -> bool:
    return value.strip().lower() == "true"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def _summary(set_name: str, method: str) -> dict | None:
    path = RESULTS / "eval" / set_name / method / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _per_image(set_name: str, method: str) -> list[dict[str, str]]:
    path = RESULTS / "eval" / set_name / method / "per_image.csv"
    return _rows(path) if path.is_file() else []


def _eval_stats(set_name: str, method: str) -> dict | None:
    rows = _per_image(set_name, method)
    if not rows:
        return None
    scored = [r for r in rows if not r["error"] and not _true(r["gt_empty"])]
    empty = [r for r in rows if not r["error"] and _true(r["gt_empty"])]
    dices = np.array([float(r["dice"]) for r in scored])
    return {"n": len(scored), "n_failed": sum(bool(r["error"]) for r in rows),
            "dice": float(dices.mean()) if dices.size else None,
            "median": float(np.median(dices)) if dices.size else None,
            "missed": sum(r["found"] == "false" for r in scored),
            "empty": len(empty), "empty_not_found": sum(r["found"] == "false" for r in empty),
            "not_found_empty": (float(np.mean([r["found"] == "false" for r in empty]))
                                if empty else None)}


# The grounding issue's quality bars: within a margin of the ground-truth-box bound, or an
# absolute Dice where a box cannot describe the target.
BARS = {"hc18": ("bound", 0.05), "cxr_lungs": ("bound", 0.05), "jsrt_heart": ("bound", 0.05),
        "isic_skin": ("bound", 0.05), "kvasir_polyp": ("bound", 0.10), "busi": ("bound", 0.10),
        "ddti_thyroid": ("bound", 0.10), "dsb_nuclei": ("bound", 0.10),
        "lgg_flair": ("abs", 0.65), "ddsm_pectoral": ("abs", 0.75),
        "jsrt_clavicles": ("abs", 0.60)}


def _scored(rows: list[dict[str, str]]) -> dict[str, float]:
    """Image id -> Dice of the rows of a ``per_image.csv`` scored without error that have a
    target."""
    return {r["id"]: float(r["dice"]) for r in rows
            if not r["error"] and not _true(r["gt_empty"])}


def _scored_file(path: Path) -> dict[str, float]:
    """:func:`_scored` of a ``per_image.csv`` file; {} when there is none."""
    return _scored(_rows(path)) if path.is_file() else {}


def _scored_dice(set_name: str, method: str) -> dict[str, float]:
    """Image id -> Dice of ``method`` on the images it scored that have a target."""
    return _scored(_per_image(set_name, method))


def _dice_on(set_name: str, method: str, ids: set[str]) -> float | None:
    """Mean Dice of ``method`` over the images ``ids`` (scored, with a target)."""
    dices = [d for i, d in _scored_dice(set_name, method).items() if i in ids]
    return float(np.mean(dices)) if dices else None


def _bar(name: str) -> float | None:
    """The set's quality bar: an absolute Dice, or the ground-truth-box bound less a margin."""
    kind, value = BARS[name]
    bound = _eval_stats(name, "gt-box")
    return value if kind == "abs" else (bound["dice"] - value if bound else None)


def _bar_met(name: str) -> bool:
    ours, bar = _eval_stats(name, "medclipsam"), _bar(name)
    return bool(ours and ours["dice"] is not None and bar is not None and ours["dice"] >= bar)


def table_quality() -> str:
    body = []
    for name in SETS:
        bound, ours = _eval_stats(name, "gt-box"), _eval_stats(name, "medclipsam")
        salip = _eval_stats(name, "salip")
        if ours is None:
            continue
        kind, value = BARS[name]
        salip_ids = {r["id"] for r in _per_image(name, "salip")}
        body.append([name, str(ours["n"]), _fmt(bound["dice"] if bound else None),
                     _fmt(ours["dice"]), _fmt(ours["median"]),
                     f"{ours['missed']}/{ours['n']}",
                     (f"{_fmt(ours['not_found_empty'], 2)} ({ours['empty']})"
                      if ours["empty"] else "-"),
                     f"{'>=' if kind == 'abs' else 'bound -'} {value:.2f}: "
                     f"{'met' if _bar_met(name) else 'not met'}",
                     _fmt(salip["dice"]) + f" ({salip['n']})" if salip else "-",
                     _fmt(_dice_on(name, "medclipsam", salip_ids)),
                     str(ours["n_failed"])])
    return _table(["set", "n", "gt-box Dice", "medclipsam Dice", "median", "missed",
                   "not found on empty (n)", "bar", "salip Dice (n)",
                   "medclipsam on salip's images", "failed"], body)


def table_speed() -> str:
    body = []
    for name in SETS:
        cells = [name]
        for method in ("gt-box", "medclipsam", "salip"):
            summary = _summary(name, method)
            cells += ([_fmt(summary["seconds_per_image"], 2),
                       _fmt(summary["wall_seconds_per_image"], 2)] if summary else ["-", "-"])
        if any(c != "-" for c in cells[1:]):
            body.append(cells)
    header = ["set"] + [f"{m} {kind}" for m in ("gt-box", "medclipsam", "salip")
                        for kind in ("method s", "end-to-end s")]
    return _table(header, body)


def _speed_runs() -> list[dict]:
    """The speed results, the earlier code ("before") first."""
    runs = [json.loads(p.read_text()) for p in sorted((RESULTS / "speed").glob("*.json"))]
    return sorted(runs, key=lambda r: (r["label"] != "before", r["label"]))


PROFILE_STEPS = (("interpreter", "interpreter start"), ("imports", "imports"),
                 ("settings_and_hashes", "settings and model file hashes"),
                 ("load_models", "loading the models"), ("read_image", "reading the image"),
                 ("segment", "segmenting (first call)"), ("write_outputs", "writing the outputs"),
                 ("interpreter_exit", "interpreter exit"))


def table_startup() -> str:
    runs = _speed_runs()
    body = [[label] + [_fmt(r["profile"]["marks"].get(key), 2) for r in runs]
            for key, label in PROFILE_STEPS]
    stages = sorted({k for r in runs for k in r["profile"]["stages"] if k != "total"},
                    key=lambda k: -max(r["profile"]["stages"].get(k, 0) for r in runs))
    body += [[f"- of which pipeline stage `{k}`"]
             + [_fmt(r["profile"]["stages"].get(k), 2) for r in runs] for k in stages]
    body.append(["**total (fresh process)**"] + [_fmt(r["profile"]["total"], 2) for r in runs])
    body.append(["`clipsam segment` one image, wall"] + [_fmt(r["one_image"], 2) for r in runs])
    body.append(["`clipsam --help`, wall"] + [_fmt(r["help"], 2) for r in runs])
    return _table(["seconds"] + [f"{r['label']} ({r['date']})" for r in runs], body)


def _speed_ratios(run: dict) -> dict[str, float]:
    """The speed issue's ratios of one speed run: folder wall over pipeline time per image
    (``segment``, ``eval``), one image in a fresh process over a folder's per-image wall time
    (``fresh``), SaLIP's time per image over an encoder pass (``salip``)."""
    seg, ev = run["segment_folder"], run["eval_folder"]
    return {"segment": seg["wall_per_image"] / seg["pipeline_per_image"],
            "eval": ev["wall_per_image"] / ev["pipeline_per_image"],
            "fresh": run["one_image"] / seg["wall_per_image"],
            "salip": run["salip"]["pipeline_per_image"] / run["encoder_pass"]}


def table_throughput() -> str:
    body = []
    for r in _speed_runs():
        seg, ev, salip = r["segment_folder"], r["eval_folder"], r["salip"]
        ratio = _speed_ratios(r)
        body.append([
            r["label"], f"{seg['wall_per_image']:.2f} / {seg['pipeline_per_image']:.2f} = "
                        f"{ratio['segment']:.2f}x",
            f"{ev['wall_per_image']:.2f} / {ev['pipeline_per_image']:.2f} = {ratio['eval']:.2f}x",
            f"{r['one_image']:.2f} / {seg['wall_per_image']:.2f} = {ratio['fresh']:.1f}x",
            f"{salip['pipeline_per_image']:.2f} / {r['encoder_pass']:.2f} = "
            f"{ratio['salip']:.2f}x",
            _fmt(ev["dice_mean"]), _fmt(salip["dice_mean"]),
            f"{r['machine']['load_average_at_start']:.1f}"])
    return _table(["code", f"segment folder: wall / pipeline per image (n={seg['n']})",
                   f"eval: wall / pipeline per image (n={ev['n']})",
                   "one image fresh / folder steady", f"salip / encoder pass (n={salip['n']})",
                   "eval Dice", "salip Dice", "load avg at start"], body)


def table_encoder_options() -> str:
    rows = _rows(RESULTS / "encoder" / "options.csv")
    body = [[r["option"], r["value"], r["median_s"], r["paired_ratio_to_default"],
             r["session_create_s"], r["max_abs_diff_to_default"]] for r in rows]
    return _table(["option", "value", "s per encoder pass (median)", "time ratio to default",
                   "session creation s", "max abs diff of features"], body)


def table_int8_sensitivity() -> str:
    rows = sorted(_rows(RESULTS / "encoder" / "sensitivity.csv"),
                  key=lambda r: float(r["cosine_mean"]))
    body = [[f"`{r['node']}`", r["op"], r["cosine_mean"], r["cosine_min"]] for r in rows[:6]]
    fine = sum(float(r["cosine_min"]) >= 0.99 for r in rows)
    body.append([f"the other {len(rows) - 6} nodes ({fine} with min cosine >= 0.99)", "", "", ""])
    return _table(["node quantised alone (int8, per-channel)", "op",
                   "embedding cosine to fp32 (mean)", "(min)"], body)


CANDIDATE_FILES = {"grounding": RESULTS / "grounding" / "candidates.csv",
                   "salip": RESULTS / "salip" / "candidates.csv"}


def _candidate_means(which: str) -> dict[str, dict[str, float]]:
    """Candidate -> mean Dice per set (images with a target), ``mean`` over the sets and
    ``seconds``, the median seconds per image, from one of ``CANDIDATE_FILES``."""
    rows = _rows(CANDIDATE_FILES[which])
    by: dict[tuple[str, str], list[float]] = defaultdict(list)
    seconds: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        seconds[r["candidate"]].append(float(r["seconds"]))
        if not _true(r["gt_empty"]):
            by[(r["candidate"], r["set"])].append(float(r["dice"]))
    sets = [s for s in SETS if any(k[1] == s for k in by)]
    means = {}
    for c in dict.fromkeys(r["candidate"] for r in rows):
        per_set = {s: float(np.mean(by[(c, s)])) for s in sets}
        means[c] = {**per_set, "mean": float(np.mean(list(per_set.values()))),
                    "seconds": float(np.median(seconds[c]))}
    return means


def _candidate_table(which: str, seconds_label: str) -> str:
    """Mean Dice per candidate and set, with the mean over sets and the median seconds per
    image."""
    means = _candidate_means(which)
    sets = [k for k in next(iter(means.values())) if k in SETS]
    body = [[c, *[_fmt(m[s]) for s in sets], _fmt(m["mean"]), _fmt(m["seconds"], 3)]
            for c, m in means.items()]
    return _table(["candidate", *sets, "mean over sets", seconds_label], body)


def table_candidates() -> str:
    return _candidate_table("grounding", "median s/image (post-encoder)")


def table_salip_candidates() -> str:
    return _candidate_table("salip", "median s/image (SaLIP run)")


def _presence(name: str) -> dict | None:
    """Presence of a set's own concept on its held-out images (scores of those with and
    without a target, the share found / not found at the calibrated threshold, the bound at
    recall 0.95) and of its prompt on other sets' images, from grounding/presence.csv."""
    rows = _rows(RESULTS / "grounding" / "presence.csv")
    own = [r for r in rows if r["set"] == name and _true(r["own"])]
    if not own:
        return None
    threshold = float(own[0]["threshold"])
    present = np.array([float(r["score"]) for r in own if not _true(r["gt_empty"])])
    empty = np.array([float(r["score"]) for r in own if _true(r["gt_empty"])])
    others = np.array([float(r["score"]) for r in rows if r["concept"] == name
                       and not _true(r["own"]) and not _true(r["may_show"])])
    # the best any threshold could do on these very images at the recall operating point:
    # a bound on calibration, not a calibration
    bound = threshold_at_recall(present, ISSUE_BARS["presence_recall"])
    return {"threshold": threshold, "present": present, "empty": empty,
            "recall": float(np.mean(present >= threshold)),
            "not_found_empty": float(np.mean(empty < threshold)) if empty.size else None,
            "best": float(np.mean(empty < bound)) if empty.size else None,
            "not_found_others": float(np.mean(others < threshold)), "n_others": others.size}


def table_presence() -> str:
    body = []
    for name in SETS:
        p = _presence(name)
        if p is None:
            continue
        n_empty = p["empty"].size
        body.append([name, f"{_fmt(p['recall'], 2)} ({p['present'].size})",
                     f"{_fmt(p['not_found_empty'], 2)} ({n_empty})" if n_empty else "-",
                     _fmt(p["best"], 2) if n_empty else "-",
                     f"{_fmt(p['not_found_others'], 2)} ({p['n_others']})",
                     _fmt(p["threshold"], 3)])
    return _table(["set", "presence recall (n)", "not found on own empty images (n)",
                   f"best possible at recall {ISSUE_BARS['presence_recall']}",
                   "not found on other sets' images (n)",
                   "threshold"], body)


def _shipped_metadata() -> dict:
    config = ROOT / "src" / "clipsam" / "data" / "grounding" / "config.json"
    return json.loads(config.read_text())["metadata"]


def table_curve() -> str:
    config = _shipped_metadata()
    body = []
    for point in config["curve"]:
        val = point.get("validation", {})
        dice = [v["dice"] for v in val.values() if v.get("dice") is not None]
        pres = [v["presence"] for v in val.values() if v.get("presence") is not None]
        body.append([str(point["epoch"]), _fmt(point["train_loss"]),
                     _fmt(float(np.mean(dice)) if dice else None),
                     _fmt(float(np.mean(pres)) if pres else None)])
    return _table(["epoch", "train loss", "validation grid Dice (mean over sets)",
                   "validation presence accuracy"], body)


@cache
def _recipe_runs() -> dict[str, dict]:
    """Each recipe's run (its ``training.json``, copied to
    ``docs/results/grounding/curves/<recipe>.json``), ``builtin`` first."""
    return {path.stem: json.loads(path.read_text())
            for path in sorted((RESULTS / "grounding" / "curves").glob("*.json"),
                               key=lambda p: (p.stem != "builtin", p.stem))}


def _recipe_last(name: str) -> dict[str, float]:
    """A recipe's last epoch: validation grid Dice per set and their ``mean``, the epoch's
    training ``loss`` and its number (``epochs``)."""
    runs = _recipe_runs()
    sets = [s for s in SETS if any(s in r["curve"][-1]["validation"] for r in runs.values())]
    last = runs[name]["curve"][-1]
    dices = {s: last["validation"][s]["dice"] for s in sets}
    return {**dices, "mean": float(np.mean(list(dices.values()))), "loss": last["train_loss"],
            "epochs": last["epoch"]}


def table_augmentation() -> str:
    """Last-epoch validation grid Dice of each recipe's run."""
    from clipsam.train.recipes import recipe_named

    body = []
    for name, run in _recipe_runs().items():
        last = _recipe_last(name)
        dices = [v for k, v in last.items() if k in SETS]
        head = "depthwise" if recipe_named(run["recipe"]).heads.depthwise else "dense"
        body.append([name, head, str(last["epochs"]),
                     f"{run['train_images']} + {run.get('views', 0)}", *[_fmt(d) for d in dices],
                     _fmt(last["mean"])])
    sets = [k for k in _recipe_last("builtin") if k in SETS]
    return _table(["recipe", "context blocks", "epochs", "images + views per epoch", *sets,
                   "mean"], body)


def _setting_cell(entry: dict | None, by_value: str, default: float) -> str:
    """A calibrated setting (map level, box margin), with its Dice against the default's when
    it moved."""
    if entry is None:
        return "-"
    dice, chosen = entry[by_value], entry["chosen"]
    if chosen == default:
        return f"{default:g}"
    return f"{chosen:g} ({dice[str(chosen)]:.3f} vs {dice[str(default)]:.3f} at {default:g})"


def table_calibration() -> str:
    config = _shipped_metadata()
    presence = config["calibration"].get("presence", {})
    sources = config["calibration"].get("mask_source", {})
    levels = config["calibration"].get("map_level", {})
    margins = config["calibration"].get("box_margin", {})
    body = []
    for concept, p in presence.items():
        s = sources.get(concept, {})
        level = levels.get(concept)
        body.append([concept, str(p["n_present"]), _fmt(p["threshold"]), _fmt(p["recall"], 2),
                     _fmt(p["not_found_empty"], 2) + f" ({p['n_empty']})" if p["n_empty"]
                     else "-", _fmt(p["not_found_other_sets"], 2),
                     _fmt(s.get("dice_segmenter")), _fmt(s.get("dice_map")),
                     _fmt(s.get("dice_union")), s.get("chosen", "segmenter"),
                     _setting_cell(level, "dice_by_level", 0.5),
                     _setting_cell(margins.get(concept), "dice_by_margin", 0.0)])
    return _table(["concept", "n with target", "threshold", "recall", "not found own empty (n)",
                   "not found other sets", "Dice segmenter", "Dice map", "Dice union",
                   "mask source", "map level", "box margin"], body)


def _draw_means(rows: list[dict], shots: int) -> list[float]:
    """Mean Dice of each draw of ``shots``-shot adaptation over ``rows`` (one left-out set's
    images with a target)."""
    draws = defaultdict(list)
    for r in rows:
        if r["kind"] == "adapted" and int(r["shots"]) == shots:
            draws[r["draw"]].append(float(r["dice"]))
    return [float(np.mean(v)) for v in draws.values()]


def _draws_cell(means: list[float]) -> str:
    return f"{np.mean(means):.3f} ± {np.std(means):.3f} ({len(means)})"


def _with_target(rows: list[dict], name: str) -> list[dict]:
    return [r for r in rows if r["set"] == name and not _true(r["gt_empty"])]


@cache
def _loso_rows(folder: str) -> tuple[dict[str, str], ...]:
    """Every row of a leave-one-set-out run's ``loso_<set>.csv`` files."""
    return tuple(r for path in sorted((RESULTS / folder).glob("loso_*.csv"))
                 for r in _rows(path))


# The issues' other bars, as they were set (figures in prose name them by key): 5-shot Dice on
# at least ``loso_sets`` left-out sets; "not found" on images without the target at a presence
# recall; time after the encoder; SaLIP within a Dice gap of MedCLIP-SAM; the speed issue's
# ratios (fresh process / folder, folder wall / pipeline, SaLIP / encoder pass) and --help
# seconds; the weak-supervision issue's students at least as good as the teacher on
# ``weak_sets`` of the 6 largest sets, trained within ``weak_minutes`` for 200 images; the rule
# a training recipe must pass to replace the shipped one (mean validation Dice gain).
ISSUE_BARS = {"loso": 0.75, "loso_sets": 6, "not_found_empty": 0.90, "presence_recall": 0.95,
              "post_encoder": 0.15, "salip_gap": 0.05, "fresh": 3, "folder": 1.15, "salip": 2,
              "help": 0.5, "weak_sets": 4, "weak_minutes": 20, "recipe_gain": 0.01,
              "volume_time": 1.15}
LOSO_BAR = ISSUE_BARS["loso"]


def _loso_met(folder: str) -> list[str]:
    """The left-out sets whose 5-shot mean Dice (over draws) reaches ``LOSO_BAR``."""
    rows = _loso_rows(folder)
    return [name for name in SETS if (means := _draw_means(_with_target(rows, name), 5))
            and np.mean(means) >= LOSO_BAR]


def table_loso(folder: str = "loso") -> str:
    rows = _loso_rows(folder)
    shots = sorted({int(r["shots"]) for r in rows if r["kind"] == "adapted"})
    body = []
    for name in SETS:
        mine = _with_target(rows, name)
        if not mine:
            continue
        text = np.mean([float(r["dice"]) for r in mine if r["kind"] == "text"])
        body.append([name, _fmt(float(text)), *[_draws_cell(_draw_means(mine, k)) for k in shots]])
    good = _loso_met(folder)
    table = _table(["left-out set", "text only", *[f"{k}-shot (draws)" for k in shots]], body)
    return table + (f"\n\n5-shot mean Dice >= {LOSO_BAR} (unrounded) on {len(good)} of "
                    f"{len(body)} sets: {', '.join(good) or 'none'}.")


def table_loso_select() -> str:
    """5-shot Dice on train-part images that are not shots, without and with views of the
    shots (settings chosen here, never on held-out images)."""
    folders = ("loso_select_views0", "loso_select_views1")
    body, means = [], {f: [] for f in folders}
    for name in SETS:
        paths = [RESULTS / f / f"loso_{name}.csv" for f in folders]
        if not all(p.is_file() for p in paths):
            continue
        cells = [name]
        for f, path in zip(folders, paths, strict=True):
            values = _draw_means(_with_target(_rows(path), name), 5)
            means[f].append(np.mean(values))
            cells.append(_draws_cell(values))
        body.append(cells)
    body.append(["mean over sets", *[_fmt(float(np.mean(means[f]))) for f in folders]])
    return _table(["left-out set", "5-shot, shots alone (draws)",
                   "5-shot, shots + 1 view each (draws)"], body)


def _paired_on_common(first: dict[str, float], second: dict[str, float]
                      ) -> tuple[float, float, float] | None:
    """Mean per-image Dice of ``first`` minus ``second`` (image id -> Dice) over the images both
    scored, with a 95 % bootstrap interval (2,000 resamples of images, fixed seed); None when
    they share no image."""
    common = sorted(first.keys() & second.keys())
    if not common:
        return None
    return paired_difference([first[i] for i in common], [second[i] for i in common])


def _paired(set_name: str, method: str, reference: str) -> tuple[float, float, float] | None:
    """:func:`_paired_on_common` of ``method``'s and ``reference``'s held-out runs of a set."""
    return _paired_on_common(_scored_dice(set_name, method), _scored_dice(set_name, reference))


def _difference_cell(paired: tuple[float, float, float] | None) -> str:
    """A paired difference and its 95 % interval as ``+0.012 [-0.003, +0.027]`` ("-": none)."""
    if paired is None:
        return "-"
    mean, low, high = paired
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def _paired_difference(set_name: str, method: str, reference: str) -> str:
    return _difference_cell(_paired(set_name, method, reference))


def _weak_model(name: str) -> dict:
    """A weak-supervision model's config.json (weak/<name>.json, e.g. busi or busi-head)."""
    return json.loads((RESULTS / "weak" / f"{name}.json").read_text())


WEAK_FAMILIES = {"U-Net": ("weak", "weak-box"), "head": ("weak-head", "weak-head-box"),
                 "self-trained U-Net": ("weak-self", "weak-self-box")}


def table_weak() -> str:
    """Weak supervision per set: the teacher against each student on held-out subjects (the
    U-Net, a head on the segmenter's embedding, the U-Net after one round of self-training where
    run; each alone and as boxes for the segmenter), from scripts/bench_weak.sh."""
    body, largest = [], []
    for name in SETS:
        path = RESULTS / "weak" / f"{name}.json"
        teacher, weak = _eval_stats(name, "weak-teacher"), _eval_stats(name, "weak")
        if not path.is_file() or teacher is None or weak is None:
            continue
        model = _weak_model(name)
        head_path = RESULTS / "weak" / f"{name}-head.json"
        head_minutes = (_weak_model(f"{name}-head")["train_seconds"] / 60
                        if head_path.is_file() else None)
        stats = {m: _eval_stats(name, m) for family in WEAK_FAMILIES.values() for m in family}
        bound = _eval_stats(name, "gt-box")
        items = model["data"]
        used = sum(item.get("used", True) for item in items)
        found = sum(item["pseudo_found"] for item in items)
        beats = {family: any(stats[m] and stats[m]["dice"] >= teacher["dice"] for m in methods)
                 for family, methods in WEAK_FAMILIES.items()}
        largest.append((len(items), beats))
        best = max((m for m in stats if stats[m]), key=lambda m: stats[m]["dice"])
        difference = f"{best}: {_paired_difference(name, best, 'weak-teacher')}"
        times = {m: (_summary(name, m) or {}).get("seconds_per_image")
                 for m in ("weak-teacher", "weak", "weak-head")}
        body.append([name, f"{used} / {len(items)} ({found})",
                     f"{_fmt(model['train_seconds'] / 60, 1)} / {_fmt(head_minutes, 1)}",
                     f"{_fmt(teacher['dice'])} ({teacher['n']})",
                     *[_fmt(stats[m]["dice"] if stats[m] else None) for m in stats],
                     _fmt(bound["dice"] if bound else None),
                     ", ".join(f for f, b in beats.items() if b) or "no", difference,
                     _fmt(times["weak-teacher"], 2), _fmt(times["weak"], 3),
                     _fmt(times["weak-head"], 2),
                     f"{times['weak-teacher'] / times['weak']:.0f}x"])
    table = _table(["set", "train images used / all (teacher found)",
                    "training min U-Net / head", "teacher Dice (n)", "U-Net weak",
                    "U-Net weak-box", "head weak", "head weak-box", "self-trained weak",
                    "self-trained weak-box", "gt-box Dice", ">= teacher",
                    "best student - teacher, paired (95 % CI)",
                    "teacher s/img", "U-Net s/img", "head s/img", "U-Net speed-up"], body)
    top = sorted(largest, key=lambda x: -x[0])[:6]
    counts = "; ".join(
        f"{family}: {sum(b[family] for _, b in top)} of {len(top)} "
        f"({sum(b[family] for _, b in largest)} of {len(largest)} in all)"
        for family in WEAK_FAMILIES)
    return table + ("\n\nAt least the teacher's Dice (alone or as boxes) on the sets with the most "
                    f"training images: {counts}.")


WEAK_RULES = {"skip, 0.25 (default)": ("", "weak"),
              "background, 0.25": ("-background", "weak-background"),
              "skip, 1": ("-weight1", "weak-weight1")}


def table_weak_rules() -> str:
    """The U-Net trained on one set's pseudo-masks under each teacher-confidence rule
    (not-found images left out or trained as background; weight of the pixels where the
    teacher's map and mask disagree), from scripts/bench_weak.sh --rules."""
    body = []
    for name in SETS:
        if not (RESULTS / "weak" / f"{name}-background.json").is_file():
            continue
        for rule, (suffix, method) in WEAK_RULES.items():
            path = RESULTS / "weak" / f"{name}{suffix}.json"
            stats = {m: _eval_stats(name, m) for m in (method, f"{method}-box")}
            if not path.is_file() or None in stats.values():
                continue
            data = _weak_model(f"{name}{suffix}")["data"]
            body.append([name, rule, f"{sum(d.get('used', True) for d in data)} / {len(data)}",
                         *[f"{_fmt(v['dice'])} ({v['n']})" for v in stats.values()]])
    return _table(["set", "not-found rule, disagreement weight", "train images used",
                   "weak Dice (n)", "weak-box Dice (n)"], body)


CHOICE_SUBSETS = {"calibration": "calibration subjects (never used for the grounding model's "
                                  "gradient steps)",
                  "train": "train-part images (the grounding model trained on most of them)"}


def table_choices() -> str:
    """The settings chosen for every concept (scripts/choose_settings.py): each candidate's
    mean Dice per set and over sets, its time, the default and the choice, from
    ``choices/<setting>/choice.json``; a sentence per setting says on which images."""
    from clipsam.train.choices import CHOICE_FILE, SETTINGS

    records = {name: json.loads(path.read_text()) for name in SETTINGS
               if (path := RESULTS / "choices" / name / CHOICE_FILE).is_file()}
    sets = [s for s in SETS if any(s in r["images"] for r in records.values())]
    body, notes = [], []
    for name, setting in SETTINGS.items():
        record = records.get(name)
        if record is None:
            body.append([f"`{name}`", "not chosen yet", *["-"] * (len(sets) + 3)])
            continue
        for candidate, c in record["candidates"].items():
            mark = " / ".join(m for m, on in (("default", candidate == record["default"]),
                                              ("**chosen**", candidate == record["chosen"]))
                              if on)
            body.append([f"`{name}`", candidate,
                         *[_fmt(c["by_set"][s]["dice"]) if s in c["by_set"] else "-"
                           for s in sets],
                         _fmt(c["mean_dice"]), _fmt(c["seconds_per_image"], 2), mark or ""])
        images = sum(len(ids) for ids in record["images"].values())
        check = (f"; a check on at most {record['limit']} images per set, not a choice"
                 if record["limit"] is not None else "")
        notes.append(f"`{name}` (`{setting.field}`): chosen on "
                     f"{CHOICE_SUBSETS[record['subset']]}, {images} images with a target in "
                     f"{len(record['images'])} sets, on {record['date'][:10]}; default "
                     f"`{record['default']}`, minimum gain {record['min_gain']:g}{check}.")
    table = _table(["setting", "candidate", *sets, "mean over sets",
                    "s/image (stored embeddings)", ""], body)
    return "\n\n".join([table, *notes]) if notes else table


def table_cross_source(shipped: bool = True) -> str:
    """Found rates of the targets that other sources' images always show (and of the same
    prompts on sets that cannot show them) of the shipped text model (its recipe's label), or
    of every other model (``shipped=False``), from
    ``cross_source/<model>/<target set>/<image set>/`` (``scripts/bench_cross_source.py``):
    found / images, and the mean Dice of what was found against the image set's *own* target
    (a shape check: the lungs overlap a JSRT heart mask little)."""
    from clipsam.train.captions import builtin_concepts, cross_source_pairs
    from clipsam.train.recipes import SHIPPED_RECIPE

    shown = {(t, i): s for t, i, s in cross_source_pairs(builtin_concepts())}
    prompts = json.loads((ROOT / "scripts" / "benchmark_prompts.json").read_text())
    body = []
    for model in sorted(p.name for p in (RESULTS / "cross_source").iterdir() if p.is_dir()
                        and (p.name == SHIPPED_RECIPE) == shipped):
        for folder in sorted((RESULTS / "cross_source" / model).glob("*/*/")):
            target, image_set = folder.parent.name, folder.name
            rows = _rows(folder / "per_image.csv")
            found = [r for r in rows if _true(r["found"])]
            overlap = np.mean([float(r["dice"] or 0) for r in found]) if found else None
            expect = shown[(target, image_set)]
            rate = len(found) / len(rows)
            bar = (rate >= 0.95) if expect else (1 - rate >= 0.99)
            body.append([model, f'"{prompts[target]}"', image_set,
                         "always" if expect else "never", str(len(rows)),
                         f"{len(found)} ({_fmt(rate, 2)})", _fmt(overlap),
                         ("found >= 0.95: " if expect else "not found >= 0.99: ")
                         + ("met" if bar else "not met")])
    return _table(["text model", "prompt", "held-out images of", "shows the target",
                   "images", "found (rate)", "Dice of found vs the set's own target", "bar"],
                  body)


def _cross_found(model: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(target set, image set) -> (found, images) of ``cross_source/<model>/``."""
    out = {}
    for folder in sorted((RESULTS / "cross_source" / model).glob("*/*/")):
        rows = _rows(folder / "per_image.csv")
        out[(folder.parent.name, folder.name)] = (sum(_true(r["found"]) for r in rows),
                                                  len(rows))
    return out


def _calibration_dice(model: str) -> dict[str, float]:
    """Concept -> calibration-subject Dice of the mask source it chose
    (``grounding/ship/<model>/calibration.json``)."""
    record = json.loads((RESULTS / "grounding" / "ship" / model / "calibration.json").read_text())
    return {concept: entry[f"dice_{entry['chosen']}"]
            for concept, entry in record["mask_source"].items()}


def table_ship_rule(candidate: str = "anatomy", shipped: str = "builtin-xlong",
                    found_must_rise: bool = True) -> str:
    """The conditions ``candidate`` ships by against ``shipped`` (docs/EXPERIMENTS.md, "The
    anatomy model" and "A gray FLAIR view"), from the cross-source runs and the calibration
    records: each co-visible found rate higher than the shipped model's (``found_must_rise``;
    else not lower), the pooled "not found" not lower by more than 0.02, calibration Dice."""
    from clipsam.train.captions import builtin_concepts, cross_source_pairs

    if not (RESULTS / "cross_source" / candidate).is_dir():
        return f"`{candidate}` not measured yet."
    shown = {(t, i): s for t, i, s in cross_source_pairs(builtin_concepts())}
    new, old = _cross_found(candidate), _cross_found(shipped)
    body = []
    pairs = sorted(k for k in new if shown[k] and k in old)
    for pair in pairs:
        (nf, nn), (of, on) = new[pair], old[pair]
        body.append([f"found: {pair[0]} target on {pair[1]}", f"{of}/{on}", f"{nf}/{nn}",
                     "met" if (nf / nn > of / on if found_must_rise else nf / nn >= of / on)
                     else "not met"])
    never = [k for k in new if not shown[k] and k in old]
    old_nf = 1 - sum(old[k][0] for k in never) / sum(old[k][1] for k in never)
    new_nf = 1 - sum(new[k][0] for k in never) / sum(new[k][1] for k in never)
    body.append(["not found where the target cannot be (pooled)", _fmt(old_nf), _fmt(new_nf),
                 "met" if new_nf >= old_nf - 0.02 else "not met"])
    cal_old, cal_new = _calibration_dice(shipped), _calibration_dice(candidate)
    drops = {c: cal_old[c] - cal_new[c] for c in cal_old if c in cal_new}
    mean_drop = float(np.mean(list(drops.values())))
    worst = max(drops, key=drops.get)
    body.append(["calibration-subject Dice, mean over concepts",
                 _fmt(float(np.mean([cal_old[c] for c in drops]))),
                 _fmt(float(np.mean([cal_new[c] for c in drops]))),
                 "met" if mean_drop <= 0.02 else "not met"])
    body.append([f"calibration-subject Dice, largest drop ({worst})", _fmt(cal_old[worst]),
                 _fmt(cal_new[worst]), "met" if drops[worst] <= 0.05 else "not met"])
    return _table(["condition", shipped, candidate, ""], body)


PREVIOUS_MODEL = "anatomy"


def table_model_change(after: str = "medclipsam", previous: str = PREVIOUS_MODEL) -> str:
    """Held-out MedCLIP-SAM Dice of a model (``eval/<set>/<after>``, the shipped model's by
    default) against the model it replaced (``eval/<set>/medclipsam-<previous>``): per set,
    the paired difference over the images both scored, with its 95 % interval."""
    before = f"medclipsam-{previous}"
    body = []
    for name in SETS:
        new, old = _eval_stats(name, after), _eval_stats(name, before)
        if new is None or old is None:
            continue
        body.append([name, str(new["n"]), _fmt(old["dice"]), _fmt(new["dice"]),
                     _paired_difference(name, after, before),
                     f"{old['missed']} / {new['missed']}",
                     (f"{_fmt(old['not_found_empty'], 2)} / {_fmt(new['not_found_empty'], 2)} "
                      f"({new['empty']})" if new["empty"] else "-")])
    if not body:
        return f"No held-out run of `{previous}` beside `{after}`."
    label = "shipped" if after == "medclipsam" else after.removeprefix("medclipsam-")
    return _table(["set", "n", f"{previous} Dice", f"{label} Dice",
                   "paired difference [95 % CI]", "missed (before / now)",
                   "not found on empty (before / now, n)"], body)


def table_decoder_adapter() -> str:
    """The decoder adapter's route forced on each concept against the shipped route, on the
    same held-out images (``lesions/<route>/<set>/``, runs of 2026-12-07 with the
    builtin-xlong model): ``forced`` adapter trained on all eleven sets, ``lforced`` on the
    lesion sets only; paired differences with 95 % intervals."""
    folder = RESULTS / "lesions"

    body = []
    for name in SETS:
        shipped = _scored_file(folder / "shipped" / name / "per_image.csv")
        if not shipped:
            continue
        cells = [name, str(len(shipped)), _fmt(float(np.mean(list(shipped.values()))))]
        for route in ("forced", "lforced"):
            other = _scored_file(folder / route / name / "per_image.csv")
            common = sorted(other.keys() & shipped.keys())
            if not common:
                cells += ["-", "-"]
                continue
            cells += [_fmt(float(np.mean([other[i] for i in common]))),
                      _difference_cell(paired_difference([other[i] for i in common],
                                                         [shipped[i] for i in common]))]
        body.append(cells)
    return _table(["set", "n", "shipped route Dice", "adapter (eleven sets) Dice",
                   "difference [95 % CI]", "adapter (lesion sets) Dice",
                   "difference [95 % CI]"], body)


def table_volumes(shipped: bool = True) -> str:
    """The volume benchmark (``scripts/bench_volumes.py``) of the shipped text model (its
    recipe's label), or of every other model (``shipped=False``), from
    ``volumes/<label>/{slices,consistent,gt-box}/`` (``per_volume.csv``, ``summary.json``):
    per volume the three Dice, slice detection and seconds, and the paired gain of the
    consistent mode with its interval (:mod:`clipsam.eval.volume_bench`)."""
    from clipsam.train.recipes import SHIPPED_RECIPE

    folder = RESULTS / "volumes"
    labels = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    parts = []
    for label in labels:
        if (label == SHIPPED_RECIPE) != shipped:
            continue
        runs = read_volume_runs(folder / label)
        if runs is None:
            continue
        summaries, rows = runs
        stored = folder / label / "summary.json"
        stored = stored.is_file() and json.loads(stored.read_text()).get("stored", False)
        parts.append(f"Text model `{label}`:\n\n" + volume_table(
            compare_volumes(summaries, rows, list(rows["slices"]), stored=stored)))
    return "\n\n".join(parts) or ("No volume results committed yet "
                                   "(`docs/results/volumes/<label>/`).")


def table_paraphrase_dice() -> str:
    """Paraphrase Dice (``scripts/bench_word_dice.py``, ``words/paraphrase_dice/summary.json``):
    per wording of the reported half, its Dice and the trained wording's on the same held-out
    images with the target, and the two bars."""
    path = RESULTS / "words" / "paraphrase_dice" / "summary.json"
    if not path.is_file():
        return "Not measured yet."
    summary = json.loads(path.read_text())
    body = [[f'"{w["phrase"]}"', w["concept"], w["kind"], str(w["n"]), _fmt(w["dice"]),
             _fmt(w["trained_dice"]), _fmt(w["difference"]), _fmt(w["ratio"])]
            for w in summary["wordings"]]
    bars = summary["bars"]
    note = (f"{summary['n_wordings']} wordings on {summary['n_images']} images "
            f"({summary['n_failed']} failed): mean difference {_fmt(summary['mean_difference'])} "
            f"(bar: at most {bars['mean_difference_at_most']:g}), worst ratio "
            f"{_fmt(summary['worst_ratio'])} (bar: at least {bars['ratio_at_least']:g}); "
            f"{'both bars hold' if bars['hold'] else 'not met'}.")
    return _table(["wording", "concept", "kind", "images", "Dice", "trained wording's Dice",
                   "difference", "ratio"], body) + "\n\n" + note


def table_presence_points() -> str:
    """The presence curve's operating points per target (``scripts/presence_curve.py``,
    ``presence_curve/summary.json``): AUC against images without the target, and at each of
    the model's points (recall, balanced, precision) the recall and the "not found" rate on the
    own set's empty images and on other sets' images."""
    path = RESULTS / "presence_curve" / "summary.json"
    if not path.is_file():
        return "Not measured yet."
    summary = json.loads(path.read_text())
    body = []
    for target, entry in summary["targets"].items():
        cells = [target, str(entry["n_present"]), str(entry["n_empty"]),
                 str(entry["n_other_sets"]), _fmt(entry["auc"])]
        for point in ("recall", "balanced", "precision"):
            q = entry["points"].get(point)
            cells.append("-" if q is None else
                         f"{_fmt(q['recall'], 2)} / {_fmt(q['not_found_empty'], 2)} / "
                         f"{_fmt(q['not_found_other_sets'], 2)}")
        body.append(cells)
    return _table(["target", "with it", "own empty", "other sets", "AUC",
                   "recall point: recall / not found empty / other",
                   "balanced point", "precision point"], body)


WEAK_LARGEST = ("ddti_thyroid", "lgg_flair", "hc18", "cxr_lungs", "kvasir_polyp", "dsb_nuclei")
"""The six sets with the most train-part images (the weak-supervision bar's sets: the first
column of table ``weak``)."""


def table_weak_shipped() -> str:
    """Weak supervision rerun with the shipped model as teacher and today's ``weak-train``
    defaults (``weak_shipped/<set>/``: ``config.json`` of the U-Net student, ``teacher``,
    ``weak`` and ``weak-box`` runs of ``clipsam eval --subset test``; where the head network was
    trained on the same pseudo-masks, ``config-head.json``, ``weak-head`` and ``weak-head-box``):
    per set, the images used and held out, the U-Net's agreement with the teacher on its
    held-out pseudo-masks and the head's, the warnings, training minutes, each Dice, and the
    best student against the teacher, paired."""
    folder = RESULTS / "weak_shipped"
    body, verdicts = [], {}  # set -> (best student >= teacher, chosen student >= teacher)
    for name in SETS:
        if not (folder / name / "config.json").is_file():
            continue
        config = json.loads((folder / name / "config.json").read_text())
        head_path = folder / name / "config-head.json"
        head = json.loads(head_path.read_text()) if head_path.is_file() else None

        # every run must be there: a missing one is an error, not an empty column
        teacher = _scored(_rows(folder / name / "teacher" / "per_image.csv"))
        runs = ("weak", "weak-box") + (("weak-head", "weak-head-box") if head else ())
        students = {run: _scored(_rows(folder / name / run / "per_image.csv")) for run in runs}
        best = max(students, key=lambda run: np.mean(list(students[run].values())))
        # what a user can choose without expert masks: the network that agrees better with
        # the teacher on its held-out pseudo-masks, used alone (`--method weak`)
        chosen = "weak-head" if head and head["agreement"] > config["agreement"] else "weak"
        paired, paired_chosen = (_paired_on_common(students[run], teacher)
                                 for run in (best, chosen))
        verdicts[name] = tuple(p is not None and p[0] >= 0 for p in (paired, paired_chosen))
        means = {run: _fmt(float(np.mean(list(students[run].values())))) if run in students
                 else "-" for run in ("weak", "weak-box", "weak-head", "weak-head-box")}
        models = [config] + ([head] if head else [])
        body.append([name, f"{sum(d['used'] for d in config['data'])} / "
                     f"{sum(d['held_out'] for d in config['data'])}",
                     " / ".join(_fmt(m["agreement"]) for m in models),
                     " / ".join(m["warning"] or "-" for m in models),
                     " / ".join(f"{m['train_seconds'] / 60:.1f}" for m in models),
                     _fmt(float(np.mean(list(teacher.values())))), *means.values(),
                     f"{best}: {_difference_cell(paired)}",
                     f"{chosen}: {_difference_cell(paired_chosen)}",
                     "yes" if verdicts[name][1] else "no"])
    if not body:
        return "Not measured yet."
    table = _table(["set", "pseudo-labelled images / of them held out",
                    "agreement with the teacher (held out), U-Net / head",
                    "warning", "training min", "teacher Dice", "U-Net weak", "U-Net weak-box",
                    "head weak", "head weak-box",
                    "best of the students on these images - teacher, paired [95 % CI]",
                    "student chosen by agreement - teacher, paired [95 % CI]",
                    ">= teacher (chosen)"], body)
    measured = [verdicts[name] for name in WEAK_LARGEST if name in verdicts]
    best_met, met = (sum(column) for column in zip(*measured, strict=True)) if measured else (0, 0)
    return table + (f"\n\nStudent chosen without expert masks (the network with the higher "
                    f"agreement, alone) >= teacher on {met} of the {len(measured)} measured of "
                    f"the {len(WEAK_LARGEST)} largest sets ({', '.join(WEAK_LARGEST)}); bar: "
                    f"{ISSUE_BARS['weak_sets']} of {len(WEAK_LARGEST)}. The best of the students "
                    f"on the held-out images themselves (an optimistic choice): {best_met}.")


def table_weak_image_count() -> str:
    """The student against the number of unlabelled images (``scripts/bench_weak_images.py``,
    every ``weak/image_count*/results.csv``, one run each): per set and count, the images used
    and held out, the optimisation steps, the agreement with the teacher on the held-out
    pseudo-masks, the warning, the training minutes, the student's and the teacher's held-out
    Dice, the date, and whether the teacher was the shipped model (the heads' SHA-256 in its
    ``run.json``)."""
    folders = sorted(p for p in (RESULTS / "weak").glob("image_count*")
                     if (p / "results.csv").is_file())
    if not folders:
        return "Not measured yet."
    shipped = _sha256(ROOT / "src" / "clipsam" / "data" / "grounding" / "heads.safetensors")
    body = []
    for folder in folders:
        for row in _rows(folder / "results.csv"):
            run = json.loads((folder / "eval" / f"{row['set']}-teacher" / "run.json").read_text())
            teacher = run["settings"].get("file.text_model.heads.safetensors") == shipped
            body.append([row["set"], row["images"], f"{row['used']} / {row['held_out']}",
                         row["steps"], _fmt(float(row["agreement"])), row["warning"] or "-",
                         _fmt(float(row["train_minutes"]), 1),
                         f"{_fmt(float(row['student_dice']))} ({row['student_n']})",
                         f"{_fmt(float(row['teacher_dice']))} ({row['teacher_n']})",
                         row["date"], "yes" if teacher else "no"])
    return _table(["set", "images", "pseudo-labelled / held out", "steps",
                   "agreement with the teacher (held out)", "warning", "training min",
                   "student Dice (n)", "teacher Dice (n)", "date", "teacher is the shipped model"],
                  body)


def table_decoding_option(folder: str = "tta", option: str = "--tta hflip",
                          reference: str = "medclipsam-anatomy") -> str:
    """A decoding option's held-out run (``lesions/<folder>/<set>/``: test-time flips, or the
    mask prompt) against the default route of the same model (``eval/<set>/<reference>``: the
    flips ran with the ``anatomy`` model, the mask prompt with the shipped one) on the same
    held-out lesion images: paired differences with 95 % intervals, "not found" on images
    without the target, and the option's median seconds per image after the stored encoder
    pass (a flipped image's pass included)."""
    body = []
    for name in SETS:
        path = RESULTS / "lesions" / folder / name / "per_image.csv"
        if not path.is_file():
            continue
        rows = _rows(path)
        changed, shipped = _scored(rows), _scored_dice(name, reference)
        common = sorted(changed.keys() & shipped.keys())
        difference = _difference_cell(paired_difference([changed[i] for i in common],
                                                        [shipped[i] for i in common]))
        empty = [r for r in rows if not r["error"] and _true(r["gt_empty"])]
        not_found = (f"{np.mean([not _true(r['found']) for r in empty]):.2f} ({len(empty)})"
                     if empty else "-")
        seconds = float(np.median([float(r["seconds"]) for r in rows if not r["error"]]))
        body.append([name, str(len(common)),
                     _fmt(float(np.mean([shipped[i] for i in common]))),
                     _fmt(float(np.mean([changed[i] for i in common]))),
                     difference, not_found, f"{seconds:.2f}"])
    if not body:
        return "Not measured yet."
    return _table(["set", "n", "default route Dice", f"with {option} Dice",
                   "difference [95 % CI]", f"not found on empty (n), with {option}",
                   f"median s/image with {option}"], body)


def table_domains(set_name: str = "dsb_nuclei") -> str:
    """Leave one domain out inside a set (``domains/<set>/<recipe>/<model>/<kind>/``,
    scripts/bench_domains.py): per recipe and kind, the held-out images of that kind scored by
    the model trained on every kind (``both``), on that kind alone and on the other kinds
    alone, and by the shipped model (``eval/<set>/medclipsam``, the same images); the
    out-of-domain gap as a paired difference against ``both`` with its 95 % interval."""
    folder = RESULTS / "domains" / set_name
    shipped = _scored_dice(set_name, "medclipsam")
    body = []
    for recipe in sorted(p.name for p in folder.glob("*/") if p.is_dir()):
        kinds = sorted(p.name for p in (folder / recipe / "both").glob("*/"))
        for kind in kinds:
            def scored(model: str, kind: str = kind, recipe: str = recipe) -> dict[str, float]:
                return _scored_file(folder / recipe / model / kind / "per_image.csv")

            both, own = scored("both"), scored(f"only-{kind}")
            others = [scored(f"only-{k}") for k in kinds if k != kind]
            other = others[0] if len(others) == 1 else {}
            ids = sorted(both.keys() & own.keys() & other.keys() & shipped.keys())
            if not ids:
                continue

            def mean(dice: dict[str, float], ids: list[str] = ids) -> str:
                return _fmt(float(np.mean([dice[i] for i in ids])))

            gap = paired_difference([other[i] for i in ids], [both[i] for i in ids])
            body.append([recipe, kind, str(len(ids)), mean(shipped), mean(both), mean(own),
                         mean(other), _difference_cell(gap)])
    if not body:
        return "Not measured yet."
    return _table(["recipe", "scored kind", "n", "shipped model Dice", "trained on both",
                   "trained on this kind only", "trained on the other kind only",
                   "other only - both [95 % CI]"], body)


def table_lesion_limits() -> str:
    """What limits box-anchored decoding on the lesion sets (``scripts/lesion_limits.py``,
    ``lesions/limits/summary.json``): per set the product path's Dice, the box-anchored
    ceiling, the images below Dice one half by cause, and the segmenter's IoU prediction
    against the true IoU."""
    path = RESULTS / "lesions" / "limits" / "summary.json"
    if not path.is_file():
        return "Not measured yet."
    body = []
    for name, entry in json.loads(path.read_text())["sets"].items():
        body.append([name, str(entry["n"]), _fmt(entry["dice"]), _fmt(entry["ceiling"]),
                     str(entry["below"]), str(entry["below_not_found"]),
                     str(entry["below_mostly_outside"]), _fmt(entry["iou_spearman"], 2),
                     _fmt(entry["iou_overconfidence"], 2)])
    return _table(["set", "images", "Dice", "box-anchored ceiling", "below 0.5",
                   "of which not found", "of which found, target mostly outside the boxes",
                   "IoU prediction: Spearman", "mean predicted minus true IoU"], body)


def table_presence_confusion() -> str:
    """"What is in this image?" (``scripts/bench_presence_confusion.py``,
    ``words/confusion/table.json``): per set, the share of its held-out images on which each
    trained concept was reported found."""
    path = RESULTS / "words" / "confusion" / "table.json"
    if not path.is_file():
        return "Not measured yet."
    record = json.loads(path.read_text())
    concepts = record["concepts"]
    body = [[name, str(entry["n"])] + [_fmt(entry["found_rate"][c], 2) for c in concepts]
            for name, entry in record["sets"].items()]
    return _table(["held-out images of", "n", *concepts], body)


TABLES: dict[str, Callable[[], str]] = {
    "quality": table_quality, "speed": table_speed, "candidates": table_candidates,
    "startup": table_startup, "throughput": table_throughput,
    "encoder_options": table_encoder_options, "int8_sensitivity": table_int8_sensitivity,
    "presence": table_presence, "curve": table_curve, "calibration": table_calibration,
    "loso": table_loso, "loso_vector": lambda: table_loso("loso_vector"),
    "loso_probe": lambda: table_loso("loso_probe"), "loso_100": lambda: table_loso("loso_100"),
    "loso_select": table_loso_select,
    "augmentation": table_augmentation, "weak": table_weak,
    "weak_rules": table_weak_rules, "salip_candidates": table_salip_candidates,
    "choices": table_choices, "cross_source": table_cross_source, "volumes": table_volumes,
    "ship_rule": table_ship_rule, "model_change": table_model_change,
    "model_change_anatomy": lambda: table_model_change("medclipsam-anatomy", "builtin-xlong"),
    "domains": table_domains,
    "volumes_history": lambda: table_volumes(shipped=False),
    "cross_source_history": lambda: table_cross_source(shipped=False),
    "decoder_adapter": table_decoder_adapter, "paraphrase_dice": table_paraphrase_dice,
    "presence_points": table_presence_points, "presence_confusion": table_presence_confusion,
    "lesion_limits": table_lesion_limits, "tta": table_decoding_option,
    "weak_shipped": table_weak_shipped,
    "weak_image_count": table_weak_image_count,
    "mask_prompt": lambda: table_decoding_option("mask_prompt", "--mask-prompt", "medclipsam"),
    "ship_rule_gray": lambda: table_ship_rule("anatomy-gray", "anatomy", found_must_rise=False),
}


# Figures in prose: ``<!-- fig:FAMILY ARG ... [FORMAT] -->NUMBER``. Each family reads the
# result files through the same helpers as the tables and returns one number.
Figure = Callable[..., float | int | None]
FIGURES: dict[str, Figure] = {}


def figure(name: str) -> Callable[[Figure], Figure]:
    def register(function: Figure) -> Figure:
        FIGURES[name] = function
        return function
    return register


@figure("eval")
def _fig_eval(set_name: str, method: str, stat: str = "dice") -> float | int | None:
    """A held-out statistic of ``clipsam eval`` (``_eval_stats``): dice, median, n, missed,
    empty, empty_not_found, not_found_empty (a share), n_failed."""
    stats = _eval_stats(set_name, method)
    return stats[stat] if stats else None


@figure("dice-on")
def _fig_dice_on(set_name: str, method: str, reference: str) -> float | None:
    """Mean Dice of ``method`` on the images ``reference`` scored."""
    return _dice_on(set_name, method, {r["id"] for r in _per_image(set_name, reference)})


@figure("mean-dice")
def _fig_mean_dice(method: str) -> float:
    """Mean over the sets of ``method``'s held-out Dice."""
    dices = [s["dice"] for name in SETS if (s := _eval_stats(name, method))]
    return float(np.mean(dices))


figure("bar")(_bar)


@figure("bar-margin")
def _fig_bar_margin(set_name: str) -> float:
    """The margin below the box bound, or the absolute Dice, of a set's quality bar."""
    return BARS[set_name][1]


@figure("issue-bar")
def _fig_issue_bar(name: str) -> float | int:
    return ISSUE_BARS[name]


@figure("bars-met")
def _fig_bars_met() -> int:
    return sum(_bar_met(name) for name in SETS)


@figure("candidate")
def _fig_candidate(which: str, candidate: str, column: str = "mean") -> float:
    """A cell of the candidates tables (``which``: grounding or salip): a set, mean, seconds."""
    return _candidate_means(which)[candidate][column]


@figure("recipe")
def _fig_recipe(name: str, column: str = "mean") -> float | int:
    """A recipe's last epoch: a set's validation grid Dice, mean, loss, epochs."""
    return _recipe_last(name)[column]


@figure("curve-best")
def _fig_curve_best(name: str) -> int:
    """The epoch of a recipe's run's highest mean validation grid Dice."""
    curve = _recipe_runs()[name]["curve"]
    means = [np.mean([v["dice"] for v in p["validation"].values() if v.get("dice") is not None])
             for p in curve]
    return int(curve[int(np.argmax(means))]["epoch"])


def _dig(value: dict, keys: tuple[str, ...]) -> float | int | None:
    """``value`` followed down ``keys``; a key of a list is its index."""
    for key in keys:
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


@figure("calib")
def _fig_calib(kind: str, concept: str, *keys: str) -> float | int | None:
    """A number of the shipped model's calibration: ``metadata.calibration[kind][concept]``
    followed down ``keys``, e.g. ``calib box_margin "brain tumour" chosen``."""
    return _dig(_shipped_metadata()["calibration"], (kind, concept, *keys))


@figure("ship")
def _fig_ship(name: str, *keys: str) -> float | int | None:
    """A number of a model's calibration record (``grounding/ship/<name>/calibration.json``,
    kept when another model replaces it) followed down ``keys``, e.g.
    ``ship anatomy volume dice_slices``."""
    path = RESULTS / "grounding" / "ship" / name / "calibration.json"
    return _dig(json.loads(path.read_text()), keys)


@figure("volume")
def _fig_volume(label: str, *keys: str) -> float | int | None:
    """A number of a volume benchmark's report (``volumes/<label>/summary.json``) followed
    down ``keys``, e.g. ``volume anatomy-gray runs consistent dice_mean``; a number key
    indexes a list."""
    return _dig(json.loads((RESULTS / "volumes" / label / "summary.json").read_text()), keys)


@figure("screen")
def _fig_screen(name: str, *keys: str) -> float | int | None:
    """A number of a screened, unshipped recipe's run (``grounding/screen/<name>/screen.json``)
    followed down ``keys``, e.g. ``screen anatomy-gray volume_calibration dice_slices``."""
    path = RESULTS / "grounding" / "screen" / name / "screen.json"
    return _dig(json.loads(path.read_text()), keys)


@figure("recipe-calib")
def _fig_recipe_calib(name: str, kind: str, concept: str, *keys: str) -> float | int | None:
    """``calib`` of a recipe's run (grounding/curves/<name>.json)."""
    return _dig(_recipe_runs()[name]["calibration"], (kind, concept, *keys))


@figure("presence")
def _fig_presence(set_name: str, key: str) -> float | None:
    """A presence statistic of a set (``_presence``): recall, not_found_empty, best,
    not_found_others, threshold."""
    return _presence(set_name)[key]


@figure("presence-score")
def _fig_presence_score(set_name: str, images: str, stat: str) -> float:
    """min, median or max presence score of a set's held-out images with a target
    (``present``) or without (``empty``)."""
    return float(getattr(np, stat)(_presence(set_name)[images]))


def _loso_draw_rows(folder: str, set_name: str, shots: str, draw: str | None) -> list[dict]:
    return [r for r in _with_target(_loso_rows(folder), set_name)
            if r["kind"] == "adapted" and r["shots"] == shots
            and (draw is None or r["draw"] == draw)]


@figure("loso")
def _fig_loso(folder: str, set_name: str, shots: str) -> float:
    """Mean over draws of a left-out set's ``shots``-shot mean Dice."""
    return float(np.mean(_draw_means(_with_target(_loso_rows(folder), set_name), int(shots))))


@figure("loso-text")
def _fig_loso_text(folder: str, set_name: str) -> float:
    rows = _with_target(_loso_rows(folder), set_name)
    return float(np.mean([float(r["dice"]) for r in rows if r["kind"] == "text"]))


@figure("loso-mean")
def _fig_loso_mean(folder: str, shots: str) -> float:
    """Mean over the left-out sets of ``loso``."""
    return float(np.mean([_fig_loso(folder, name, shots) for name in SETS
                          if _with_target(_loso_rows(folder), name)]))


@figure("loso-met")
def _fig_loso_met(folder: str) -> int:
    return len(_loso_met(folder))


@figure("loso-not-found")
def _fig_loso_not_found(folder: str, set_name: str, shots: str, draw: str | None = None) -> float:
    """Percent of a left-out set's images with a target answered "not found" (all draws, or
    one: 0, 1, 2)."""
    rows = _loso_draw_rows(folder, set_name, shots, draw)
    return 100 * float(np.mean([r["found"] == "False" for r in rows]))


@figure("loso-empty-not-found")
def _fig_loso_empty_not_found(folder: str, set_name: str, shots: str) -> float:
    """Percent of a left-out set's images without a target answered "not found" (all
    draws)."""
    rows = [r for r in _loso_rows(folder) if r["set"] == set_name and _true(r["gt_empty"])
            and r["kind"] == "adapted" and r["shots"] == shots]
    return 100 * float(np.mean([r["found"] == "False" for r in rows]))


@figure("loso-found-dice")
def _fig_loso_found_dice(folder: str, set_name: str, shots: str,
                         draw: str | None = None) -> float:
    """Mean Dice on a left-out set's images with a target that were found."""
    rows = _loso_draw_rows(folder, set_name, shots, draw)
    return float(np.mean([float(r["dice"]) for r in rows if r["found"] == "True"]))


def _speed_run(label: str) -> dict:
    return next(r for r in _speed_runs() if r["label"] == label)


@figure("speed")
def _fig_speed(label: str, path: str) -> float:
    """A number of a speed run (speed/<label>.json) by its dotted key path."""
    value = _speed_run(label)
    for key in path.split("."):
        value = value[key]
    return value


@figure("speed-ratio")
def _fig_speed_ratio(label: str, kind: str) -> float:
    """One of ``_speed_ratios``: segment, eval, fresh, salip."""
    return _speed_ratios(_speed_run(label))[kind]


@figure("weak-minutes")
def _fig_weak_minutes(name: str) -> float:
    """Training minutes of a weak-supervision model."""
    return _weak_model(name)["train_seconds"] / 60


@figure("weak-images")
def _fig_weak_images(name: str) -> int:
    """Training images a weak-supervision model learned from."""
    return sum(item.get("used", True) for item in _weak_model(name)["data"])


@figure("summary-over")
def _fig_summary_over(method: str, key: str, stat: str) -> float:
    """min, max, mean or median over the sets of a number of ``method``'s summary.json."""
    values = [s[key] for name in SETS if (s := _summary(name, method))]
    return float(getattr(np, stat)(values))


@figure("weak-speedup")
def _fig_weak_speedup(stat: str) -> float:
    """min or max over the sets of the teacher's time per image over the U-Net's."""
    ratios = [t["seconds_per_image"] / w["seconds_per_image"] for name in SETS
              if (t := _summary(name, "weak-teacher")) and (w := _summary(name, "weak"))]
    return float(getattr(np, stat)(ratios))


@figure("paired")
def _fig_paired(set_name: str, method: str, reference: str, part: str = "mean") -> float | None:
    """Paired Dice difference ``method`` - ``reference`` (mean, low or high of its 95 %
    bootstrap interval)."""
    paired = _paired(set_name, method, reference)
    return paired[("mean", "low", "high").index(part)] if paired else None


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@figure("weak-teacher-shipped")
def _fig_weak_teacher_shipped() -> int:
    """How many sets' weak-supervision teacher runs used the shipped grounding heads (by the
    heads' SHA-256 in the run's run.json)."""
    shipped = _sha256(ROOT / "src" / "clipsam" / "data" / "grounding" / "heads.safetensors")
    runs = [RESULTS / "eval" / name / "weak-teacher" / "run.json" for name in SETS]
    return sum(json.loads(p.read_text())["settings"].get("file.text_model.heads.safetensors")
               == shipped for p in runs if p.is_file())


@figure("encoder")
def _fig_encoder(option: str, value: str, column: str) -> float:
    """A cell of encoder/options.csv (the row of ``option`` and ``value``)."""
    row = next(r for r in _rows(RESULTS / "encoder" / "options.csv")
               if r["option"] == option and r["value"] == value)
    return float(row[column])


@figure("int8")
def _fig_int8(rank: str, column: str) -> float:
    """A cell of encoder/sensitivity.csv, rows ranked by mean cosine (1 = lowest)."""
    rows = sorted(_rows(RESULTS / "encoder" / "sensitivity.csv"),
                  key=lambda r: float(r["cosine_mean"]))
    return float(rows[int(rank) - 1][column])


FIGURE = re.compile(r"<!-- fig:(?P<key>[\w-][^\n]*?) -->(?P<value>[+-]?\d+(?:\.\d+)?)?")
FORMAT = re.compile(r"\+?\.\d+f")


def figure_value(key: str) -> str:
    """The text of the figure ``key`` (``FAMILY ARG ... [FORMAT]``)."""
    tokens = shlex.split(key)
    spec = tokens.pop() if len(tokens) > 1 and FORMAT.fullmatch(tokens[-1]) else None
    family, *args = tokens
    if family not in FIGURES:
        raise ValueError(f"<!-- fig:{key} -->: no figure family {family!r} "
                         f"(known: {', '.join(sorted(FIGURES))})")
    try:
        value = FIGURES[family](*args)
    except (KeyError, IndexError, StopIteration, TypeError, OSError) as error:
        raise ValueError(f"<!-- fig:{key} -->: {type(error).__name__}: {error}") from error
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise ValueError(f"<!-- fig:{key} -->: the result files give no value")
    if isinstance(value, (bool, int, np.integer)):
        return format(int(value), spec or "d")
    return format(float(value), spec or ".3f")


def render(text: str) -> str:
    """``text`` with every table and figure rewritten from the result files."""
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- table:{name} -->\n)(?:.*?\n)?(<!-- /table:{name} -->)",
                             re.S)
        if pattern.search(text):
            table = make()
            text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    return FIGURE.sub(lambda m: f"<!-- fig:{m['key']} -->{figure_value(m['key'])}", text)


# Decimal numbers allowed in prose without a figure marker: what is not a measurement of this
# project. Each entry is a regular expression and why; keep it short (tests check that every
# entry is still used).
ALLOWED: tuple[tuple[str, str], ...] = (
    (r"\b\d+\.\d+\.\d+\b", "a version number (torch 2.13.0)"),
    (r"Python 3\.\d+", "a Python version"),
    (r"arXiv \d{4}\.\d{5}", "an arXiv identifier"),
    (r"Apache-2\.0|CC BY 4\.0", "a licence's name"),
    (r"MedCLIP-SAMv2 0\.76-0\.78 and SaLIP 0\.44-0\.63", "published figures, cited"),
    (r"(?:by\s+more\s+than|within)\s+0\.0[25]\b", "a margin of a rule stated before a run"),
    (r"below 0\.5 it warns", "a constant of the code (WEAK_AGREEMENT_FLOOR)"),
)
DECIMAL = re.compile(r"(?<![\w.])(?:\d*\.\d+(?:e-?\d+)?|\d+e-\d+)")


def _blank(pattern: re.Pattern | str, text: str, flags: int = 0) -> str:
    """``text`` with every match of ``pattern`` replaced by its newlines (lines keep their
    numbers)."""
    return re.sub(pattern, lambda m: "\n" * m.group(0).count("\n"), text, flags=flags)


def _blank_indented_code(text: str) -> str:
    """``text`` without Markdown's indented code blocks (4 spaces, after a blank line)."""
    lines, code = text.split("\n"), False
    for i, line in enumerate(lines):
        code = line.startswith("    ") and (code or i == 0 or not lines[i - 1].strip())
        if code:
            lines[i] = ""
    return "\n".join(lines)


def unmarked_decimals(text: str) -> list[tuple[int, str, str]]:
    """(line number, number, line) of every decimal number in ``text`` that is not in a
    generated table, a figure, code (commands, options and names, as typed) or an ``ALLOWED``
    phrase."""
    rest = _blank(r"<!-- table:(\w+) -->.*?<!-- /table:\1 -->", text, re.S)
    rest = _blank(r"```.*?```", rest, re.S)
    rest = _blank_indented_code(rest)
    rest = _blank(r"`[^`]+`", rest)
    rest = _blank(FIGURE, rest)
    rest = _blank(r"<!--.*?-->", rest, re.S)
    for pattern, _ in ALLOWED:
        rest = _blank(pattern, rest)
    lines = text.split("\n")
    return [(i + 1, m.group(0), lines[i]) for i, line in enumerate(rest.split("\n"))
            for m in DECIMAL.finditer(line)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a document differs from the result "
                             "files or holds an unmarked decimal")
    args = parser.parse_args()
    status = 0
    for doc in DOCS:
        name = os.path.relpath(doc, ROOT)
        current = doc.read_text()
        new = render(current)
        if new != current:
            if args.check:
                print(f"{name} differs from docs/results: run scripts/make_tables.py")
                status = 1
            else:
                doc.write_text(new)
        for line, number, _ in unmarked_decimals(new):
            print(f"{name}:{line}: unmarked decimal {number}: mark it as a figure "
                  "(<!-- fig:... -->), remove it, or add its phrase to ALLOWED with the reason")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
