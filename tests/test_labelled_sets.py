"""Writing a subset of a set's meta.csv (clipsam.io.labelled_sets.write_meta_subset)."""

from __future__ import annotations

from clipsam.io.labelled_sets import META_NAME, read_meta, write_meta_subset


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
