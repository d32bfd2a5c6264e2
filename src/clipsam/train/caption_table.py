"""open_clip-style caption tables (``filepath``, ``title`` columns) as training samples."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from clipsam.errors import InputError
from clipsam.io.labelled_sets import Sample


def caption_samples(table: Path, separator: str = ",") -> list[tuple[Sample, str]]:
    """Rows of a caption table as whole-image samples with their captions; relative paths are
    read from the table's folder. A sample's subject and mask path are its image."""
    table = Path(table)
    if not table.is_file():
        raise InputError(f"caption table {table} not found")
    if len(separator) != 1:
        raise InputError(f"the caption table's column separator must be one character, "
                         f"got {separator!r}")
    try:
        with table.open(newline="", encoding="utf-8") as handle:
            table_rows = list(csv.DictReader(handle, delimiter=separator))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{table} is not a readable text table: {exc}") from None
    rows = []
    for row in table_rows:
        if not row.get("filepath") or not row.get("title"):
            raise InputError(f"{table} needs 'filepath' and 'title' columns in every row")
        path = Path(row["filepath"])
        path = path if path.is_absolute() else table.parent / path
        key = hashlib.sha256(str(path).encode()).hexdigest()[:10]
        sample = Sample(f"captions-{table.stem}", f"{path.stem}-{key}", str(path), path, path)
        rows.append((sample, row["title"].strip()))
    if not rows:
        raise InputError(f"{table} has no rows")
    return rows
