"""A missing real model, data set or optional library is a skip on a laptop and a failure when
``CI=true``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = '''
import pytest
from real_resources import import_or_skip, skip_missing


@pytest.fixture()
def weights():
    skip_missing("stand-in weights not available")


def test_needs_weights(weights):
    pass


def test_needs_data():
    skip_missing("stand-in data set not found")


def test_needs_library():
    import_or_skip("clipsam_no_such_library", "pip install clipsam-no-such-library")


def test_other_skip():
    pytest.skip("not a real resource")
'''


def run_probe(folder: Path, ci: str | None) -> subprocess.CompletedProcess:
    (folder / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent),
                                         env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "real_resources", "-rs", "-q",
                           "-p", "no:cacheprovider", "test_probe.py"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci", [None, "false"])
def test_missing_resources_skip_outside_ci(tmp_path, ci):
    result = run_probe(tmp_path, ci)
    assert result.returncode == 0, result.stdout
    assert "4 skipped" in result.stdout
    assert "real resource missing: stand-in weights not available" in result.stdout
    assert "clipsam_no_such_library not importable" in result.stdout


def test_missing_resources_fail_in_ci(tmp_path):
    result = run_probe(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    assert "2 failed" in result.stdout and "1 error" in result.stdout
    assert "1 skipped" in result.stdout  # a skip for another reason stays a skip
    assert "CI=true, so this is a failure: Skipped: real resource missing" in result.stdout
