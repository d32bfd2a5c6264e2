"""What every ``clipsam`` command promises: a user error is one ``clipsam: error:`` line with
exit code 2 (never a traceback), every option has help, and the options shared by several
commands have one name and reach the models they configure."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from clipsam.apps import cli
from clipsam.errors import WeightsError

MODEL_COMMANDS = ("eval", "segment", "serve", "adapt", "finetune", "weak-train")
"""The commands that load models: each takes --runtime, --device and --threads."""


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """``clipsam ARGV`` in this process: (exit code, stdout, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # usage errors leave through argparse
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def paths(tmp_path, examples_dir) -> dict[str, str]:
    """A labelled set, an image, an empty folder, images without masks, a plain file, a path
    that does not exist and an output folder."""
    empty = tmp_path / "empty"
    empty.mkdir()
    no_masks = tmp_path / "no_masks" / "images"
    no_masks.mkdir(parents=True)
    image = examples_dir / "images" / "002_HC.png"
    (no_masks / image.name).write_bytes(image.read_bytes())
    plain = tmp_path / "notes.md"
    plain.write_text("not a set\n")
    return {"set": str(examples_dir), "image": str(image), "empty": str(empty),
            "no_masks": str(no_masks.parent), "file": str(plain),
            "missing": str(tmp_path / "missing"), "out": str(tmp_path / "out")}


@pytest.fixture
def no_models(monkeypatch, box_segmenter):
    """A stand-in LiteMedSAM (fast), and a server that must never start."""
    monkeypatch.setattr("clipsam.models.sam.load_litemedsam", lambda *a, **k: box_segmenter)

    def refuse(*args, **kwargs):
        raise AssertionError("the server started despite bad arguments")

    monkeypatch.setattr("uvicorn.run", refuse)


# command -> (case, argv with {placeholders} from `paths`, words the error must contain)
BAD_ARGUMENTS = {
    "segment": [
        ("missing file", ["{missing}/x.png", "-p", "lungs", "-o", "{out}"], "no image found"),
        ("bad value", ["{image}", "-p", "lungs", "-o", "{out}", "--method", "nope"],
         "invalid choice"),
        ("bad folder", ["{empty}", "-p", "lungs", "-o", "{out}"], "no image found"),
        ("no-op option", ["{image}", "-p", "lungs", "-o", "{out}", "--workers", "2"],
         "--engine ray"),
        ("model without its method", ["{image}", "-p", "lungs", "-o", "{out}", "--model",
                                      "{empty}"], "--model only applies"),
    ],
    "eval": [
        ("missing folder", ["{missing}", "--method", "gt-box"], "not an evaluation set"),
        ("bad value", ["{set}", "--method", "gt-box", "--limit", "0"], "--limit"),
        ("bad folder", ["{no_masks}", "--method", "gt-box"], "masks is missing"),
    ],
    "finetune": [
        ("missing captions", ["--captions", "{missing}/c.csv", "--out", "{out}"], "not found"),
        ("exclude without images", ["--data", "{set}", "-p", "head", "--exclude", "{empty}",
                                    "--out", "{out}"], "needs images/"),
        ("a file as --data", ["--data", "{set}", "{file}", "-p", "a", "b", "--out", "{out}"],
         "notes.md needs images/ and masks/"),
        ("bad folder", ["--data", "{no_masks}", "-p", "head", "--out", "{out}"],
         "no_masks needs images/ and masks/"),
        ("bad value", ["--data", "{set}", "-p", "head", "--epochs", "0", "--out", "{out}"],
         "--epochs"),
        ("prompt count", ["--data", "{set}", "-p", "a", "b", "--out", "{out}"],
         "one --prompt per --data"),
        ("bad separator", ["--captions", "{file}", "--csv-separator", "ab", "--out", "{out}"],
         "one character"),
    ],
    "adapt": [
        ("missing folder", ["{missing}", "-p", "liver", "--out", "{out}"], "needs images/"),
        ("bad value", ["{set}", "-p", "liver", "--shots", "0", "--out", "{out}"], "--shots"),
        ("bad base folder", ["{set}", "-p", "liver", "--base", "{empty}", "--out", "{out}"],
         "not a grounding model folder"),
    ],
    "weak-train": [
        ("missing folder", ["{missing}", "-p", "head", "--out", "{out}"], "not a folder"),
        ("bad value", ["{empty}", "-p", "head", "--out", "{out}", "--cycles", "5", "--steps",
                       "2"], "cycles"),
        ("bad folder", ["{empty}", "-p", "head", "--out", "{out}"], "no image found"),
        ("teacher is the output", ["{set}", "-p", "head", "--method", "weak", "--model",
                                   "{out}", "--out", "{out}"], "different folders"),
    ],
    "models": [
        ("unknown model", ["path", "no-such-model"], "known models are"),
        ("no action", [], "required"),
        ("no model name", ["fetch"], "required"),
    ],
    "serve": [
        ("bad value", ["--port", "70000"], "port number"),
        ("missing text model", ["--text-model", "{missing}"], "unknown image-text model"),
        ("bad device", ["--device", "cuda"], "cuda"),
    ],
}
CASES = [(command, *case) for command, cases in BAD_ARGUMENTS.items() for case in cases]


def test_the_bad_argument_cases_cover_every_command():
    assert set(BAD_ARGUMENTS) == set(cli.COMMANDS)


@pytest.mark.parametrize(("command", "case", "argv", "words"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_user_error_is_one_line_and_exit_2(command, case, argv, words, paths, no_models,
                                             capsys):
    code, out, err = run([command, *(a.format(**paths) for a in argv)], capsys)
    assert code == 2, (out, err)
    assert err.startswith("clipsam: error: ") and err.count("\n") == 1, err
    assert words in err and "Traceback" not in out + err


def test_an_unknown_command_is_one_line_too(capsys):
    code, _, err = run(["bogus"], capsys)
    assert code == 2 and err.startswith("clipsam: error: ") and err.count("\n") == 1


def test_the_installed_entry_point_prints_no_traceback(paths):
    """The issue's example, through a fresh interpreter: --exclude DIR without images/."""
    done = subprocess.run(
        [sys.executable, "-m", "clipsam.apps.cli", "finetune", "--data", paths["set"], "-p",
         "head", "--exclude", paths["empty"], "--out", paths["out"]],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    assert done.stderr.startswith("clipsam: error: --exclude ") and done.stderr.count("\n") == 1


def every_action(parser: argparse.ArgumentParser, path: str = "clipsam"):
    """(command path, action) for every action of the parser tree except -h; checks on the way
    that each parser's --help renders (a stray % in a help text would break it)."""
    assert parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from every_action(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_of_every_command_has_help():
    actions = list(every_action(cli.build_parser()))
    commands = {path for path, _ in actions}
    assert {f"clipsam {name}" for name in cli.COMMANDS} | {"clipsam models path"} <= commands
    missing = [f"{path} {'/'.join(a.option_strings) or a.dest}" for path, a in actions
               if not (a.help or "").strip()]
    assert missing == []


def options_of(command: str) -> dict[str, argparse.Action]:
    parser = next(a for a in cli.build_parser()._actions
                  if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {option: action for action in parser._actions for option in action.option_strings}


def test_shared_options_have_one_name_everywhere():
    for command in MODEL_COMMANDS:
        options = options_of(command)
        assert {"--runtime", "--device", "--threads"} <= set(options), command
        assert "--part" not in options, command
    for command in ("eval", "segment", "adapt", "finetune", "weak-train"):
        options = options_of(command)
        assert options["-p"] is options["--prompt"], command
    assert "--subset" in options_of("finetune") and "--subset" in options_of("eval")


@pytest.mark.parametrize("command", ["adapt", "finetune", "weak-train"])
def test_runtime_device_and_threads_reach_the_segmenter(command, paths, monkeypatch, capsys):
    calls = []

    def recording(*args, **kwargs):
        calls.append(kwargs)
        raise WeightsError("stand-in: the segmenter is not loaded")

    monkeypatch.setattr("clipsam.models.sam.load_litemedsam", recording)
    monkeypatch.setattr("clipsam.models.device.use_torch_threads", lambda threads: None)
    argv = {"adapt": ["adapt", "{set}", "-p", "liver", "--out", "{out}"],
            "finetune": ["finetune", "--data", "{set}", "-p", "head", "--out", "{out}"],
            "weak-train": ["weak-train", "{set}", "-p", "head", "--out", "{out}"]}[command]
    argv = [a.format(**paths) for a in argv]
    code, _, err = run([*argv, "--runtime", "torch", "--device", "cpu", "--threads", "1"],
                       capsys)
    assert code == 2 and "stand-in" in err
    assert calls == [{"runtime": "torch", "device": "cpu", "threads": 1}]
