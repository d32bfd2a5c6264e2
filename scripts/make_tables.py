"""Regenerate the tables of docs/BENCHMARKS.md from the result files under docs/results/.

    .venv/bin/python scripts/make_tables.py [--check]

Each table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` markers and is
rewritten from its source files; nothing in a table is typed by hand. ``--check`` exits 1 when
the document is not what the result files give (for CI).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from clipsam.train.calibrate import threshold_at_recall

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
DOC = ROOT / "docs" / "BENCHMARKS.md"
SETS = ("hc18", "cxr_lungs", "jsrt_heart", "isic_skin", "kvasir_polyp", "busi", "ddti_thyroid",
        "dsb_nuclei", "lgg_flair", "ddsm_pectoral", "jsrt_clavicles")


def _rows(path: Path) -> list[dict[str, str]]:
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
            "empty": len(empty),
            "not_found_empty": (float(np.mean([r["found"] == "false" for r in empty]))
                                if empty else None)}


BARS = {"hc18": ("bound", 0.05), "cxr_lungs": ("bound", 0.05), "jsrt_heart": ("bound", 0.05),
        "isic_skin": ("bound", 0.05), "kvasir_polyp": ("bound", 0.10), "busi": ("bound", 0.10),
        "ddti_thyroid": ("bound", 0.10), "dsb_nuclei": ("bound", 0.10),
        "lgg_flair": ("abs", 0.65), "ddsm_pectoral": ("abs", 0.75),
        "jsrt_clavicles": ("abs", 0.60)}


def _scored_dice(set_name: str, method: str) -> dict[str, float]:
    """Image id -> Dice of ``method`` on the images it scored that have a target."""
    return {r["id"]: float(r["dice"]) for r in _per_image(set_name, method)
            if not r["error"] and not _true(r["gt_empty"])}


def _dice_on(set_name: str, method: str, ids: set[str]) -> float | None:
    """Mean Dice of ``method`` over the images ``ids`` (scored, with a target)."""
    dices = [d for i, d in _scored_dice(set_name, method).items() if i in ids]
    return float(np.mean(dices)) if dices else None


def table_quality() -> str:
    body = []
    for name in SETS:
        bound, ours = _eval_stats(name, "gt-box"), _eval_stats(name, "medclipsam")
        salip = _eval_stats(name, "salip")
        if ours is None:
            continue
        kind, value = BARS[name]
        bar = (bound["dice"] - value if kind == "bound" and bound else value)
        met = ours["dice"] is not None and bar is not None and ours["dice"] >= bar
        salip_ids = {r["id"] for r in _per_image(name, "salip")}
        body.append([name, str(ours["n"]), _fmt(bound["dice"] if bound else None),
                     _fmt(ours["dice"]), _fmt(ours["median"]),
                     f"{ours['missed']}/{ours['n']}",
                     (f"{_fmt(ours['not_found_empty'], 2)} ({ours['empty']})"
                      if ours["empty"] else "-"),
                     f"{'>=' if kind == 'abs' else 'bound -'} {value:.2f}: "
                     f"{'met' if met else 'not met'}",
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


def table_throughput() -> str:
    body = []
    for r in _speed_runs():
        seg, ev, salip = r["segment_folder"], r["eval_folder"], r["salip"]
        body.append([
            r["label"], f"{seg['wall_per_image']:.2f} / {seg['pipeline_per_image']:.2f} = "
                        f"{seg['wall_per_image'] / seg['pipeline_per_image']:.2f}x",
            f"{ev['wall_per_image']:.2f} / {ev['pipeline_per_image']:.2f} = "
            f"{ev['wall_per_image'] / ev['pipeline_per_image']:.2f}x",
            f"{r['one_image']:.2f} / {seg['wall_per_image']:.2f} = "
            f"{r['one_image'] / seg['wall_per_image']:.1f}x",
            f"{salip['pipeline_per_image']:.2f} / {r['encoder_pass']:.2f} = "
            f"{salip['pipeline_per_image'] / r['encoder_pass']:.2f}x",
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


def _candidate_table(path: Path, seconds_label: str) -> str:
    """Mean Dice per candidate and set (images with a target) from a candidates.csv, with the
    mean over sets and the median seconds per image."""
    rows = _rows(path)
    by: dict[tuple[str, str], list[float]] = defaultdict(list)
    seconds: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        seconds[r["candidate"]].append(float(r["seconds"]))
        if not _true(r["gt_empty"]):
            by[(r["candidate"], r["set"])].append(float(r["dice"]))
    candidates = list(dict.fromkeys(r["candidate"] for r in rows))
    sets = [s for s in SETS if any(k[1] == s for k in by)]
    body = []
    for c in candidates:
        means = [np.mean(by[(c, s)]) for s in sets]
        body.append([c, *[_fmt(m) for m in means], _fmt(float(np.mean(means))),
                     _fmt(float(np.median(seconds[c])), 3)])
    return _table(["candidate", *sets, "mean over sets", seconds_label], body)


def table_candidates() -> str:
    return _candidate_table(RESULTS / "grounding" / "candidates.csv",
                            "median s/image (post-encoder)")


def table_salip_candidates() -> str:
    return _candidate_table(RESULTS / "salip" / "candidates.csv", "median s/image (SaLIP run)")


def table_presence() -> str:
    rows = _rows(RESULTS / "grounding" / "presence.csv")
    body = []
    for name in SETS:
        own = [r for r in rows if r["set"] == name and _true(r["own"])]
        if not own:
            continue
        concept_rows = [r for r in rows if r["concept"] == name]
        present = [float(r["score"]) >= float(r["threshold"])
                   for r in own if not _true(r["gt_empty"])]
        empty = [float(r["score"]) < float(r["threshold"]) for r in own if _true(r["gt_empty"])]
        # the best any threshold could do on these very images at the recall operating point:
        # a bound on calibration, not a calibration
        scores = [float(r["score"]) for r in own if not _true(r["gt_empty"])]
        bound = threshold_at_recall(np.asarray(scores), 0.95)
        best = [float(r["score"]) < bound for r in own if _true(r["gt_empty"])]
        others = [float(r["score"]) < float(r["threshold"]) for r in concept_rows
                  if not _true(r["own"]) and not _true(r["may_show"])]
        body.append([name, f"{_fmt(float(np.mean(present)), 2)} ({len(present)})",
                     f"{_fmt(float(np.mean(empty)), 2)} ({len(empty)})" if empty else "-",
                     _fmt(float(np.mean(best)), 2) if best else "-",
                     f"{_fmt(float(np.mean(others)), 2)} ({len(others)})",
                     _fmt(float(own[0]["threshold"]), 3)])
    return _table(["set", "presence recall (n)", "not found on own empty images (n)",
                   "best possible at recall 0.95", "not found on other sets' images (n)",
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


def table_augmentation() -> str:
    """Last-epoch validation grid Dice of each recipe's run (its ``training.json``, copied to
    ``docs/results/grounding/curves/<recipe>.json``)."""
    from clipsam.train.recipes import recipe_named

    runs = {path.stem: json.loads(path.read_text())
            for path in sorted((RESULTS / "grounding" / "curves").glob("*.json"),
                               key=lambda p: (p.stem != "builtin", p.stem))}
    sets = [s for s in SETS if any(s in r["curve"][-1]["validation"] for r in runs.values())]
    body = []
    for name, run in runs.items():
        last = run["curve"][-1]["validation"]
        dices = [last[s]["dice"] for s in sets]
        head = "depthwise" if recipe_named(run["recipe"]).heads.depthwise else "dense"
        body.append([name, head, str(run["curve"][-1]["epoch"]),
                     f"{run['train_images']} + {run.get('views', 0)}", *[_fmt(d) for d in dices],
                     _fmt(float(np.mean(dices)))])
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


def table_loso(folder: str = "loso") -> str:
    rows = [r for path in sorted((RESULTS / folder).glob("loso_*.csv")) for r in _rows(path)]
    shots = sorted({int(r["shots"]) for r in rows if r["kind"] == "adapted"})
    body, good = [], []
    for name in SETS:
        mine = _with_target(rows, name)
        if not mine:
            continue
        text = np.mean([float(r["dice"]) for r in mine if r["kind"] == "text"])
        cells = [name, _fmt(float(text))]
        for k in shots:
            means = _draw_means(mine, k)
            cells.append(_draws_cell(means))
            if k == 5 and np.mean(means) >= 0.75:
                good.append(name)
        body.append(cells)
    table = _table(["left-out set", "text only", *[f"{k}-shot (draws)" for k in shots]], body)
    return table + (f"\n\n5-shot mean Dice >= 0.75 (unrounded) on {len(good)} of {len(body)} "
                    f"sets: {', '.join(good) or 'none'}.")


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


def _paired_difference(set_name: str, method: str, reference: str) -> str:
    """Mean per-image Dice of ``method`` minus ``reference`` over the images both scored, with
    a 95 % bootstrap interval (2,000 resamples of images, fixed seed)."""
    first, second = _scored_dice(set_name, method), _scored_dice(set_name, reference)
    common = sorted(first.keys() & second.keys())
    if not common:
        return "-"
    diff = np.array([first[i] - second[i] for i in common])
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), (2000, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return f"{diff.mean():+.3f} [{low:+.3f}, {high:+.3f}]"


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
        model = json.loads(path.read_text())
        head_path = RESULTS / "weak" / f"{name}-head.json"
        head_minutes = (json.loads(head_path.read_text())["train_seconds"] / 60
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
            data = json.loads(path.read_text())["data"]
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
    "choices": table_choices,
}


def render(text: str) -> str:
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- table:{name} -->\n)(?:.*?\n)?(<!-- /table:{name} -->)",
                             re.S)
        if pattern.search(text):
            table = make()
            text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    current = DOC.read_text()
    new = render(current)
    if args.check:
        if new != current:
            print("docs/BENCHMARKS.md differs from docs/results: run scripts/make_tables.py")
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
