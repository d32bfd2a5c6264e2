"""Labelled sets: the one meta.csv reader and its subset writer, sample listing, and the
subject-only split."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.errors import InputError
from clipsam.eval.dataset import open_dataset, subject_subset
from clipsam.io.labelled_sets import (
    META_NAME,
    ImageMeta,
    Sample,
    list_samples,
    read_meta,
    write_meta_subset,
)
from clipsam.io.splits import calibration_of, held_out_subjects, split_of


def make_set(root: Path, ids: list[str], meta: str | None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for image_id in ids:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "images" / f"{image_id}.png")
        Image.fromarray(np.full((8, 8), 255, np.uint8)).save(root / "masks" / f"{image_id}.png")
    if meta is not None:
        (root / "meta.csv").write_text(meta)
    return root


def patients_set(root: Path, patients: int = 60) -> Path:
    """Two images per patient, as JSRT heart and JSRT clavicles hold the same X-rays."""
    ids = [f"P{p:03d}_{k}" for p in range(patients) for k in range(2)]
    rows = "".join(f"{i},{i.split('_')[0]},0.7\n" for i in ids)
    return make_set(root, ids, "id,patient,pixel_spacing_mm\n" + rows)


def test_read_meta_gives_subjects_and_spacings(tmp_path):
    root = make_set(tmp_path / "set", ["a", "b", "c"],
                    "id,subject,pixel_spacing_mm\na,s1,0.5\nb,,\nc,s1,-1\n")
    assert read_meta(root) == {"a": ImageMeta("s1", (0.5, 0.5)), "b": ImageMeta(None, None),
                               "c": ImageMeta("s1", None)}
    assert read_meta(make_set(tmp_path / "bare", ["a"], None)) == {}


@pytest.mark.parametrize(("meta", "message"), [
    ("name,subject\na,s1\n", "no 'id' column"),
    ("id,pixel_spacing_mm\na,wide\n", "pixel_spacing_mm of a is not a number"),
])
def test_read_meta_refuses_unusable_tables(tmp_path, meta, message):
    root = make_set(tmp_path / "set", ["a"], meta)
    with pytest.raises(InputError, match=message):
        read_meta(root)
    with pytest.raises(InputError, match=message):
        open_dataset(root)
    with pytest.raises(InputError, match=message):
        list_samples(root)


def test_samples_and_cases_read_the_same_table(tmp_path):
    root = make_set(tmp_path / "set", ["a", "b"], "id,patient,pixel_spacing_mm\na,p7,0.25\nb,,\n")
    assert [(s.image_id, s.subject) for s in list_samples(root)] == [("a", "p7"), ("b", "b")]
    assert [c.spacing for c in open_dataset(root)] == [(0.25, 0.25), None]


@pytest.mark.parametrize("subject", ["JPCLN001", "s01", "001", "TCGA_CS_4941"])
def test_the_split_hashes_the_subject_alone(subject):
    unit = int.from_bytes(hashlib.sha256(subject.encode()).digest()[:8], "big") / 2**64
    for set_name in ("jsrt_heart", "jsrt_clavicles"):
        sample = Sample(set_name, f"{subject}_0", subject, Path("i.png"), Path("m.png"))
        assert split_of(sample) == ("test" if unit < 0.2 else "train")
        assert split_of(sample, test_fraction=unit + 1e-9) == "test"
        assert split_of(sample, test_fraction=unit) == "train"


def test_a_subject_in_two_sets_is_on_the_same_side_in_both(tmp_path):
    heart = list_samples(patients_set(tmp_path / "jsrt_heart"))
    clavicles = list_samples(patients_set(tmp_path / "jsrt_clavicles"))
    sides = {}
    for sample in heart + clavicles:
        sides.setdefault(sample.subject, set()).add(split_of(sample))
    assert all(len(side) == 1 for side in sides.values())
    held_out = {subject for subject, side in sides.items() if side == {"test"}}
    assert 0 < len(held_out) < len(sides)
    heart_test = subject_subset(open_dataset(tmp_path / "jsrt_heart"), "test")
    clavicle_test = subject_subset(open_dataset(tmp_path / "jsrt_clavicles"), "test")
    assert [c.id for c in heart_test] == [c.id for c in clavicle_test]
    assert {c.id.split("_")[0] for c in heart_test} == held_out


def test_calibration_is_by_subject_and_independent_of_the_split(tmp_path):
    samples = list_samples(patients_set(tmp_path / "a", patients=200))
    again = list_samples(patients_set(tmp_path / "b", patients=200))
    assert [calibration_of(s) for s in samples] == [calibration_of(s) for s in again]
    calibration = {s.subject for s in samples if calibration_of(s)}
    test = {s.subject for s in samples if split_of(s) == "test"}
    assert 10 < len(calibration) < 60 and calibration != test
    assert {s.subject for s in samples if calibration_of(s, fraction=1.0)} == {
        s.subject for s in samples}


def test_held_out_subjects_are_a_stable_share_never_all():
    subjects = [f"p{i}" for i in range(20)] * 3  # three images per subject
    held = held_out_subjects(subjects, 0.2, "salt")
    assert len(held) == 4 and held <= set(subjects)
    assert held == held_out_subjects(reversed(subjects), 0.2, "salt")  # order-free
    assert held != held_out_subjects(subjects, 0.2, "other salt")
    assert len(held_out_subjects(["a", "b"], 0.9, "salt")) == 1  # never every subject
    assert len(held_out_subjects(["a", "b", "c"], 0.01, "salt")) == 1  # at least one
    assert held_out_subjects(["a", "a"], 0.5, "salt") == set()  # one subject: none
    assert held_out_subjects(subjects, 0.0, "salt") == set()


def test_the_subset_keeps_the_chosen_rows_and_every_column(tmp_path):
    source, target = tmp_path / "set", tmp_path / "subset"
    source.mkdir()
    target.mkdir()
    (source / META_NAME).write_text("id,subject,channels\na,p1,gray\nb,p1,rgb\nc,p2,gray\n")
    write_meta_subset(source, {"a", "c"}, target)
    assert (target / META_NAME).read_text().splitlines() == [
        "id,subject,channels", "a,p1,gray", "c,p2,gray"]
    assert {k: v.subject for k, v in read_meta(target).items()} == {"a": "p1", "c": "p2"}


def test_a_set_without_meta_csv_gives_none(tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "subset").mkdir()
    write_meta_subset(tmp_path / "set", {"a"}, tmp_path / "subset")
    assert not (tmp_path / "subset" / META_NAME).exists()
