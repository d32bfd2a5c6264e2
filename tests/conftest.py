"""Shared fixtures: the evaluation data, the shipped examples and the real LiteMedSAM segmenter."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data`` (the evaluation sets); skips the test when it is absent."""
    root = (REPO.parent / "shared" / "data").resolve()
    if not root.is_dir():
        pytest.skip(f"evaluation data not found at {root}")
    return root


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The HC18 examples shipped in the repository (images/, masks/, meta.csv)."""
    return REPO / "examples"


@pytest.fixture(scope="session")
def litemedsam():
    """The real LiteMedSAM segmenter; skips when its code or weights are not available."""
    from clipsam.errors import WeightsError

    try:
        from clipsam.models.sam import load_litemedsam
    except ImportError as exc:
        pytest.skip(f"LiteMedSAM loader not available: {exc}")
    try:
        return load_litemedsam()
    except WeightsError as exc:
        pytest.skip(f"LiteMedSAM weights not available: {exc}")
