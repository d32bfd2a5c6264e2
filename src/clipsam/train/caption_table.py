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
    rows = []
    with table.open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter=separator):
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
