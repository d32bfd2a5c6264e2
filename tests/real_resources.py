"""Real resources (model weights, evaluation data, optional libraries, the test browser): missing
ones are a skip on a laptop and a failure in CI.

A test that needs such a resource gets it from a fixture here or calls :func:`skip_missing`
when it is absent. Locally that is a skip, listed by ``pytest -rs``; with ``CI=true`` the hook
below turns it into a failure, so a CI run never passes without having run the real-model and
real-data tests. ``tests/conftest.py`` loads this module as a pytest plugin.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

MISSING = "real resource missing"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def skip_missing(what: str) -> NoReturn:
    """Skip the current test because ``what`` (a model, a data set...) is not available."""
    pytest.skip(f"{MISSING}: {what}")


def import_or_skip(module: str, install: str) -> ModuleType:
    """``module`` imported, or :func:`skip_missing` naming how to ``install`` it (unlike
    ``pytest.importorskip``, a failure in CI). Call it inside a test or fixture."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        skip_missing(f"{module} not importable ({exc}): {install}")


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """With ``CI=true``, a :func:`skip_missing` skip is reported as a failure."""
    outcome = yield
    report = outcome.get_result()
    reason = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else ""
    if MISSING in reason and in_ci():
        report.outcome = "failed"
        report.longrepr = f"CI=true, so this is a failure: {reason}"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data`` (the evaluation sets); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        skip_missing(f"evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def litemedsam():
    """The real LiteMedSAM segmenter; skips when its weights are not available."""
    from clipsam.errors import WeightsError
    from clipsam.models.sam import load_litemedsam

    try:
        return load_litemedsam()
    except WeightsError as exc:
        skip_missing(f"LiteMedSAM weights not available: {exc}")
