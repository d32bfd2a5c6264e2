"""DICOM SEG output of a segmentation run: each prompt's SNOMED CT codes and the algorithm
identification, around the writer of :mod:`clipsam.io.dicom_seg`.

A prompt that names a target of the prompt library (by name or alias) gets the codes listed for
it in ``clipsam/data/snomed.json``; any other prompt gets the table's generic code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from clipsam.api import SegmentResult
from clipsam.io.dicom_seg import Algorithm, CodedTerm, Segment, write_dicom_seg
from clipsam.io.image import MedicalImage
from clipsam.io.vocabulary import snomed_table
from clipsam.pipelines.prompts import library_target


def segment_codes(prompt: str) -> tuple[CodedTerm, CodedTerm, CodedTerm | None]:
    """(category, property type, anatomic region or None) for a prompt."""
    table = snomed_table()
    entry = table["targets"].get(library_target(prompt) or "", table["generic"])
    scheme = table["scheme"]
    category_value, category_meaning, _source = table["categories"][entry["category"]]
    type_value, type_meaning = entry["type"]
    region = entry.get("region")
    return (CodedTerm(category_value, scheme, category_meaning),
            CodedTerm(type_value, scheme, type_meaning),
            CodedTerm(region[0], scheme, region[1]) if region else None)


def algorithm_of(result: SegmentResult) -> Algorithm:
    """clipsam, its version, and the method, models and settings key that made ``result``."""
    provenance = result.provenance
    parameters = {"method": (provenance.get("config") or {}).get("method"),
                  "segmenter": provenance.get("segmenter"),
                  "text_model": provenance.get("text_model"),
                  "settings": provenance.get("settings")}
    return Algorithm(name="clipsam", version=str(provenance.get("clipsam") or "unknown"),
                     parameters={k: _parameter(v) for k, v in parameters.items() if v})


def _parameter(value: object) -> str:
    """A value for DICOM's ``key=value,...`` Algorithm Parameters: no ',' or '='."""
    return str(value).replace(",", ";").replace("=", ":")


def write_seg(path: str | os.PathLike[str], image: MedicalImage,
              results: Sequence[SegmentResult]) -> Path:
    """One DICOM SEG of every prompt's mask (one segment each) over the DICOM ``image``."""
    segments = []
    for result in results:
        category, property_type, region = segment_codes(result.prompt)
        segments.append(Segment(label=result.prompt, category=category,
                                property_type=property_type, mask=result.mask, region=region))
    return write_dicom_seg(path, image, segments, algorithm_of(results[0]))
