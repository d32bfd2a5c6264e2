"""docs/BENCHMARKS.md's tables are what scripts/make_tables.py makes of docs/results/."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _make_tables():
    spec = importlib.util.spec_from_file_location("make_tables", ROOT / "scripts/make_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_table_is_generated_from_the_committed_results():
    tables = _make_tables()
    text = tables.DOC.read_text()
    for name in tables.TABLES:
        assert f"<!-- table:{name} -->" in text, f"table {name} is not in the document"
    assert tables.render(text) == text, "run scripts/make_tables.py"


def test_a_changed_table_is_written_between_its_markers(monkeypatch):
    tables = _make_tables()
    text = tables.DOC.read_text()
    monkeypatch.setitem(tables.TABLES, "quality", lambda: "| edited |")
    assert "| edited |" in tables.render(text)
