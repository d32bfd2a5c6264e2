"""Optional extras: a feature whose package is missing answers with one line naming the extra and
how to install it (exit 2), never a traceback. Absence is simulated by hiding the module."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clipsam.api
from clipsam.apps.cli import main
from clipsam.errors import EXTRA_MODULES, MissingExtraError, require
from test_api import sample_image

REPO = Path(__file__).resolve().parents[1]


def hide(monkeypatch, extra: str) -> None:
    """Make the extra's module look uninstalled (find_spec gives None, import fails)."""
    monkeypatch.setitem(sys.modules, EXTRA_MODULES[extra], None)


def install_hint(extra: str) -> tuple[str, str]:
    return f"pip install 'clipsam[{extra}]'", f"bash scripts/setup.sh --with {extra}"


@pytest.mark.parametrize("extra", sorted(EXTRA_MODULES))
def test_require_names_the_extra_and_both_install_commands(monkeypatch, extra):
    require(extra, "this feature")  # installed here (the test extras install every extra)
    hide(monkeypatch, extra)
    with pytest.raises(MissingExtraError) as info:
        require(extra, "this feature")
    message = str(info.value)
    assert "\n" not in message and message.startswith("this feature needs")
    assert all(hint in message for hint in install_hint(extra))


def test_extras_table_matches_pyproject_and_setup_script():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(EXTRA_MODULES) == set(declared) - {"test"}
    for extra, module in EXTRA_MODULES.items():
        assert any(requirement.startswith(module) for requirement in declared[extra])
    refused = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--with", "nope"],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert all(extra in refused.stderr for extra in EXTRA_MODULES)


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "scan.png"
    Image.fromarray(sample_image()).save(path)
    return path


def no_models(config):
    raise AssertionError("models must not load when an extra is missing")


@pytest.mark.parametrize(("extra", "options"), [
    ("ray", ("--engine", "ray")),
    ("dicom", ("--output-format", "dicom-seg")),
])
def test_segment_option_without_its_extra_is_one_line_exit_2(monkeypatch, capsys, tmp_path,
                                                             image, extra, options):
    monkeypatch.setattr(clipsam.api, "Segmenter", no_models)
    hide(monkeypatch, extra)
    code = main(["segment", "-q", str(image), "-p", "lungs", "-o", str(tmp_path / "out"),
                 *options])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert options[0] in err and all(hint in err for hint in install_hint(extra))
    assert not (tmp_path / "out").exists()


def test_python_api_checks_its_extra_too(monkeypatch, tmp_path):
    from clipsam.apps.batch import SegmentJob
    from clipsam.apps.ray_engine import run_ray
    from clipsam.io.dicom_seg import Algorithm, write_dicom_seg
    from clipsam.io.image import MedicalImage

    hide(monkeypatch, "ray")
    with pytest.raises(MissingExtraError, match=r"clipsam\[ray\]"):
        run_ray([], SegmentJob(("x",), tmp_path, "key"), no_models)
    hide(monkeypatch, "dicom")
    with pytest.raises(MissingExtraError, match=r"clipsam\[dicom\]"):
        write_dicom_seg(tmp_path / "x.dcm", MedicalImage(np.zeros((2, 2)), None, "dicom"), [],
                        Algorithm("clipsam", "0", {}))
    hide(monkeypatch, "napari")
    monkeypatch.delitem(sys.modules, "clipsam.apps.napari_plugin", raising=False)
    with pytest.raises(MissingExtraError, match=r"the napari plugin needs .*clipsam\[napari\]"):
        importlib.import_module("clipsam.apps.napari_plugin")


def test_real_command_line_without_ray_prints_no_traceback(tmp_path, image):
    """The README's command, in a fresh interpreter where ``ray`` cannot be imported."""
    script = ("import sys; sys.modules['ray'] = None; from clipsam.apps.cli import main; "
              "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", script, "segment", str(image.parent), "-p",
                           "left and right lungs", "-o", str(tmp_path / "out"), "--engine", "ray"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert "pip install 'clipsam[ray]'" in done.stderr
