"""The documents' tables and figures are what scripts/make_tables.py makes of docs/results/, and
their prose holds no measured decimal that is not generated."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("make_tables", ROOT / "scripts/make_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_table_and_figure_is_generated_from_the_committed_results(tables):
    texts = {doc.name: doc.read_text() for doc in tables.DOCS}
    for name in tables.TABLES:
        holders = [d for d, text in texts.items() if f"<!-- table:{name} -->" in text]
        assert len(holders) == 1, f"table {name} is in {holders or 'no document'}"
    for doc, text in texts.items():
        assert tables.render(text) == text, f"{doc}: run scripts/make_tables.py"


def test_a_changed_table_is_written_between_its_markers(tables, monkeypatch):
    text = tables.DOCS[0].read_text()
    monkeypatch.setitem(tables.TABLES, "quality", lambda: "| edited |")
    assert "| edited |" in tables.render(text)


def test_a_figure_that_disagrees_with_the_files_is_rewritten(tables):
    text = (ROOT / "README.md").read_text()
    marker = tables.FIGURE.search(text)
    assert marker and marker["value"], "the README has no marked figure"
    edited = text[:marker.start("value")] + "0.12345" + text[marker.end("value"):]
    assert tables.render(edited) == text


def test_a_figure_is_formatted_as_its_marker_asks(tables):
    text = "<!-- fig:issue-bar loso .1f -->9 and <!-- fig:issue-bar loso_sets -->"
    assert tables.render(text) == ("<!-- fig:issue-bar loso .1f -->0.8 and "
                                   "<!-- fig:issue-bar loso_sets -->6")


def test_an_unknown_figure_is_an_error_that_names_it(tables):
    with pytest.raises(ValueError, match="no-such-family"):
        tables.render("<!-- fig:no-such-family hc18 -->0.5")
    with pytest.raises(ValueError, match="issue-bar no_such_bar"):
        tables.render("<!-- fig:issue-bar no_such_bar -->0.5")


def test_no_document_holds_an_unmarked_decimal(tables):
    found = [f"{doc.name}:{line}: {number} in {text.strip()!r}" for doc in tables.DOCS
             for line, number, text in tables.unmarked_decimals(doc.read_text())]
    assert not found, "mark these figures or remove them:\n" + "\n".join(found)


def test_unmarked_decimals_are_found_outside_tables_code_figures_and_allowed_phrases(tables):
    text = "\n".join([
        "Dice 0.93 here,",                                       # 1: unmarked
        "<!-- table:quality -->", "| 0.5 |", "<!-- /table:quality -->",
        "`--uncertain-weight 0.25` and torch 2.13.0,",           # code and a version
        "figure <!-- fig:issue-bar loso .2f -->0.75 and 1e-6.",  # 6: scientific notation
        "", "    clipsam eval --limit 0.5", "",                  # indented code
        "```", "0.7", "```",
        "last 3.4x"])                                            # 13
    assert [(line, number) for line, number, _ in tables.unmarked_decimals(text)] == [
        (1, "0.93"), (6, "1e-6"), (13, "3.4")]


def test_every_figure_family_is_used(tables):
    texts = "\n".join(doc.read_text() for doc in tables.DOCS)
    used = {m["key"].split()[0] for m in tables.FIGURE.finditer(texts)}
    assert set(tables.FIGURES) == used, f"no figure uses {set(tables.FIGURES) - used}"


def test_every_allowed_phrase_is_still_used(tables):
    texts = "\n".join(doc.read_text() for doc in tables.DOCS)
    for pattern, reason in tables.ALLOWED:
        assert re.search(pattern, texts), f"ALLOWED {pattern!r} ({reason}) matches nothing"


def test_check_fails_on_a_figure_the_files_do_not_give(tables, tmp_path, monkeypatch, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("loso sets <!-- fig:issue-bar loso_sets -->7\n")
    monkeypatch.setattr(tables, "DOCS", (doc,))
    monkeypatch.setattr(sys, "argv", ["make_tables.py", "--check"])
    assert tables.main() == 1
    assert "differs from docs/results" in capsys.readouterr().out
    assert doc.read_text().endswith("-->7\n")  # --check changes nothing
    monkeypatch.setattr(sys, "argv", ["make_tables.py"])
    assert tables.main() == 0
    assert doc.read_text().endswith("-->6\n")


def test_check_fails_on_an_unmarked_decimal(tables, tmp_path, monkeypatch, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("Dice 0.93\n")
    monkeypatch.setattr(tables, "DOCS", (doc,))
    monkeypatch.setattr(sys, "argv", ["make_tables.py", "--check"])
    assert tables.main() == 1
    assert "doc.md:1: unmarked decimal 0.93" in capsys.readouterr().out


def _cross_run(root, model, target, image_set, found, n):
    folder = root / "cross_source" / model / target / image_set
    folder.mkdir(parents=True)
    rows = ["id,dice,found"] + [f"i{k},0,{'true' if k < found else 'false'}" for k in range(n)]
    (folder / "per_image.csv").write_text("\n".join(rows) + "\n")


def _calibration(root, model, dice):
    folder = root / "grounding" / "ship" / model
    folder.mkdir(parents=True)
    record = {"mask_source": {c: {"chosen": "map", "dice_map": d} for c, d in dice.items()}}
    (folder / "calibration.json").write_text(json.dumps(record))


def test_ship_rule_reads_each_condition_from_the_result_files(tables, tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    for model, found, never in (("old", 5, 0), ("new", 30, 3)):
        _cross_run(tmp_path, model, "cxr_lungs", "jsrt_heart", found, 32)  # always shows
        _cross_run(tmp_path, model, "cxr_lungs", "hc18", never, 50)  # cannot show
    _calibration(tmp_path, "old", {"lungs": 0.95, "heart": 0.90})
    _calibration(tmp_path, "new", {"lungs": 0.96, "heart": 0.80})
    rows = {line.split("|")[1].strip(): line.split("|")[-2].strip()
            for line in tables.table_ship_rule("new", "old").splitlines()[2:]}
    assert rows["found: cxr_lungs target on jsrt_heart"] == "met"
    # 3 of 50 found where the target cannot be: 0.94 against 1.00, more than 0.02 lower
    assert rows["not found where the target cannot be (pooled)"] == "not met"
    assert rows["calibration-subject Dice, mean over concepts"] == "not met"
    assert rows["calibration-subject Dice, largest drop (heart)"] == "not met"
    assert tables.table_ship_rule("absent", "old") == "`absent` not measured yet."
    # a found rate equal to the shipped one: not higher, but not lower either
    assert tables.table_ship_rule("new", "new").splitlines()[2].endswith("| not met |")
    assert tables.table_ship_rule("new", "new", found_must_rise=False).splitlines()[2].endswith(
        "| met |")


def test_paraphrase_table_states_both_bars_from_the_summary(tables, tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    assert tables.table_paraphrase_dice() == "Not measured yet."
    folder = tmp_path / "words" / "paraphrase_dice"
    folder.mkdir(parents=True)
    wording = {"phrase": "both lung fields", "concept": "lungs", "kind": "synonym", "n": 3,
               "dice": 0.9, "trained_dice": 0.95, "difference": 0.05, "ratio": 0.947}
    (folder / "summary.json").write_text(json.dumps({
        "n_wordings": 1, "n_images": 3, "n_failed": 0, "mean_difference": 0.05,
        "worst_ratio": 0.947, "wordings": [wording],
        "bars": {"mean_difference_at_most": 0.02, "ratio_at_least": 0.9, "hold": False}}))
    table = tables.table_paraphrase_dice()
    assert '| "both lung fields" | lungs | synonym | 3 | 0.900 | 0.950 | 0.050 | 0.947 |' in table
    assert table.endswith("(bar: at least 0.9); not met.")


def write_per_image(folder: Path, dices: dict[str, float], seconds: float | list[float] = 1.0,
                    extra: tuple[str, ...] = ()) -> None:
    """``folder``/per_image.csv of images with a target, found at ``dices`` in ``seconds``
    each (a number per image, or one for all), then the raw rows ``extra``."""
    folder.mkdir(parents=True)
    each = seconds if isinstance(seconds, list) else [seconds] * len(dices)
    lines = [f"{i},{d},0,0,0,true,false,{s},1," for (i, d), s in zip(dices.items(), each,
                                                                        strict=True)]
    (folder / "per_image.csv").write_text(
        "id,dice,iou,hd95,nsd,found,gt_empty,seconds,wall_seconds,error\n"
        + "\n".join([*lines, *extra]) + "\n")


def test_decoding_option_table_pairs_its_run_with_the_default_route(tables, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    assert tables.table_decoding_option() == "Not measured yet."
    for folder, dices in ((tmp_path / "eval" / "busi" / "medclipsam-anatomy", (0.5, 0.7)),
                          (tmp_path / "lesions" / "tta" / "busi", (0.6, 0.7))):
        write_per_image(folder, {"a0": dices[0], "a1": dices[1]}, seconds=[1, 2],
                        extra=("e,0,0,0,0,false,true,1,2,",))  # no target, not found
    row = tables.table_decoding_option().splitlines()[2]
    assert row.startswith("| busi | 2 | 0.600 | 0.650 | +0.050 [")
    assert row.endswith("| 1.00 (1) | 1.00 |")  # median of 1, 2 and 1 seconds


def test_weak_shipped_table_compares_the_better_student_with_its_teacher(tables, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    assert tables.table_weak_shipped() == "Not measured yet."
    folder = tmp_path / "weak_shipped" / "busi"
    for run, dices in (("teacher", (0.5, 0.7)), ("weak", (0.4, 0.6)), ("weak-box", (0.6, 0.8))):
        write_per_image(folder / run, {"a0": dices[0], "a1": dices[1]})
    (folder / "config.json").write_text(json.dumps({
        "data": [{"used": True, "held_out": False}, {"used": True, "held_out": True},
                 {"used": False, "held_out": False}],
        "agreement": 0.81, "warning": None, "train_seconds": 90}))
    row = tables.table_weak_shipped().splitlines()[2]
    assert row.startswith("| busi | 2 / 1 | 0.810 | - | 1.5 | 0.600 | 0.500 | 0.700 | - | - | "
                          "weak-box: +0.100 [")
    # the student chosen without expert masks is the U-Net alone, below its teacher
    assert "| weak: -0.100 [" in row and row.endswith("| no |")
    # the bar counts the largest sets only: busi is not one, hc18's students lose
    hc18 = tmp_path / "weak_shipped" / "hc18"
    for run, dices in (("teacher", (0.9, 0.9)), ("weak", (0.8, 0.7)), ("weak-box", (0.8, 0.8))):
        write_per_image(hc18 / run, {"h0": dices[0], "h1": dices[1]})
    (hc18 / "config.json").write_text((folder / "config.json").read_text())
    table = tables.table_weak_shipped()
    assert next(line for line in table.splitlines() if line.startswith("| hc18 |")).endswith(
        "| no |")
    assert table.splitlines()[-1].startswith("Student chosen without expert masks")
    assert "on 0 of the 1 measured of the 6 largest sets (ddti_thyroid, " in table
    assert "bar: 4 of 6." in table
    # a head network on the same pseudo-masks: its columns, and it may be the best student
    for run, dices in (("weak-head", (0.95, 0.93)), ("weak-head-box", (0.9, 0.9))):
        write_per_image(hc18 / run, {"h0": dices[0], "h1": dices[1]})
    (hc18 / "config-head.json").write_text(json.dumps(
        {"agreement": 0.7, "warning": "did not learn", "train_seconds": 30}))
    table = tables.table_weak_shipped()
    row = next(line for line in table.splitlines() if line.startswith("| hc18 |"))
    assert row.startswith("| hc18 | 2 / 1 | 0.810 / 0.700 | - / did not learn | 1.5 / 0.5 | "
                          "0.900 | 0.750 | 0.800 | 0.940 | 0.900 | weak-head: +0.040 [")
    # the head agrees less with the teacher than the U-Net: the U-Net is the chosen student
    assert "| weak: -0.150 [" in row and row.endswith("| no |")
    assert "on 0 of the 1 measured" in table and table.endswith(
        "(an optimistic choice): 1.")
    (hc18 / "config-head.json").write_text(json.dumps(
        {"agreement": 0.9, "warning": None, "train_seconds": 30}))
    row = next(line for line in tables.table_weak_shipped().splitlines()
               if line.startswith("| hc18 |"))
    # now the head agrees better: it is both the best and the chosen student
    assert row.count("| weak-head: +0.040 [") == 2 and row.endswith("| yes |")


def test_weak_image_count_table_reads_each_count_and_names_the_teacher(tables, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    assert tables.table_weak_image_count() == "Not measured yet."
    folder = tmp_path / "weak" / "image_count"
    (folder / "eval" / "hc18-teacher").mkdir(parents=True)
    shipped = tables._sha256(tables.ROOT / "src" / "clipsam" / "data" / "grounding"
                             / "heads.safetensors")
    (folder / "eval" / "hc18-teacher" / "run.json").write_text(json.dumps(
        {"settings": {"file.text_model.heads.safetensors": shipped}}))
    (folder / "results.csv").write_text(
        "set,images,used,held_out,steps,agreement,warning,train_minutes,student_dice,"
        "student_n,teacher_dice,teacher_n,date\n"
        "hc18,25,24,5,400,0.91234,,3.456,0.8,59,0.9,59,2026-12-07 07:15\n"
        "hc18,50,50,10,400,0.3,did not learn,6.0,0.2,59,0.9,59,2026-12-07 07:32\n")
    rows = tables.table_weak_image_count().splitlines()[2:]
    assert rows == [
        "| hc18 | 25 | 24 / 5 | 400 | 0.912 | - | 3.5 | 0.800 (59) | 0.900 (59) | "
        "2026-12-07 07:15 | yes |",
        "| hc18 | 50 | 50 / 10 | 400 | 0.300 | did not learn | 6.0 | 0.200 (59) | 0.900 (59) | "
        "2026-12-07 07:32 | yes |"]
    # another run (another folder) with an earlier teacher: its rows follow, marked
    other = tmp_path / "weak" / "image_count_old"
    (other / "eval" / "hc18-teacher").mkdir(parents=True)
    (other / "eval" / "hc18-teacher" / "run.json").write_text(json.dumps(
        {"settings": {"file.text_model.heads.safetensors": "0" * 64}}))
    (other / "results.csv").write_text(
        (folder / "results.csv").read_text().splitlines()[0] + "\n"
        "hc18,25,25,5,400,0.5,,1,0.7,59,0.8,59,2026-12-06 07:15\n")
    rows = tables.table_weak_image_count().splitlines()[2:]
    assert len(rows) == 3 and rows[2].startswith("| hc18 | 25 | 25 / 5 |")
    assert rows[2].endswith("| 2026-12-06 07:15 | no |")


def test_domains_table_pairs_each_model_on_the_same_images_of_a_kind(tables, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    assert tables.table_domains() == "Not measured yet."
    write_per_image(tmp_path / "eval" / "dsb_nuclei" / "medclipsam",
                    {"g1": 0.8, "g2": 0.8, "r1": 0.7})
    runs = tmp_path / "domains" / "dsb_nuclei" / "loso"
    write_per_image(runs / "both" / "gray", {"g1": 0.8, "g2": 0.6})
    write_per_image(runs / "only-gray" / "gray", {"g1": 0.9, "g2": 0.7})
    # g3 is not in "both": left out of every column
    write_per_image(runs / "only-rgb" / "gray", {"g1": 0.4, "g2": 0.2, "g3": 0.1})
    write_per_image(runs / "both" / "rgb", {"r1": 0.6})
    write_per_image(runs / "only-gray" / "rgb", {"r1": 0.5})
    write_per_image(runs / "only-rgb" / "rgb", {"r1": 0.7})
    gray, rgb = tables.table_domains().splitlines()[2:]
    assert gray.startswith("| loso | gray | 2 | 0.800 | 0.700 | 0.800 | 0.300 | -0.400 [")
    assert rgb.startswith("| loso | rgb | 1 | 0.700 | 0.600 | 0.700 | 0.500 | -0.100 [")


def test_lesion_limits_table_reads_each_cause_from_the_summary(tables, tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    assert tables.table_lesion_limits() == "Not measured yet."
    folder = tmp_path / "lesions" / "limits"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"sets": {"busi": {
        "n": 29, "dice": 0.661, "ceiling": 0.778, "below": 8, "below_not_found": 1,
        "below_mostly_outside": 6, "n_rated": 29, "iou_spearman": 0.84,
        "iou_overconfidence": 0.21}}}))
    row = tables.table_lesion_limits().splitlines()[2]
    assert row == "| busi | 29 | 0.661 | 0.778 | 8 | 1 | 6 | 0.84 | 0.21 |"


def test_presence_points_table_shows_each_operating_point(tables, tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    assert tables.table_presence_points() == "Not measured yet."
    folder = tmp_path / "presence_curve"
    folder.mkdir()
    point = {"threshold": 0.4, "recall": 0.95, "not_found_empty": 0.5,
             "not_found_other_sets": 0.99}
    (folder / "summary.json").write_text(json.dumps({"targets": {"heart": {
        "n_present": 20, "n_empty": 4, "n_other_sets": 300, "auc": 0.97,
        "points": {"recall": point, "balanced": None}}}}))
    row = tables.table_presence_points().splitlines()[2]
    assert row == "| heart | 20 | 4 | 300 | 0.970 | 0.95 / 0.50 / 0.99 | - | - |"


def test_confusion_table_has_a_row_per_set_and_a_column_per_concept(tables, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    assert tables.table_presence_confusion() == "Not measured yet."
    folder = tmp_path / "words" / "confusion"
    folder.mkdir(parents=True)
    (folder / "table.json").write_text(json.dumps({
        "concepts": ["heart", "lungs"],
        "sets": {"cxr_lungs": {"n": 4, "found_rate": {"heart": 0.75, "lungs": 1.0}}}}))
    lines = tables.table_presence_confusion().splitlines()
    assert lines[0] == "| held-out images of | n | heart | lungs |"
    assert lines[2] == "| cxr_lungs | 4 | 0.75 | 1.00 |"
