"""Recalibrating an existing model's presence from its recorded subjects, without retraining:
a model calibrated before operating points gets them, with the same recall thresholds."""

import json
import runpy
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from clipsam.errors import InputError
from clipsam.io.labelled_sets import list_samples
from clipsam.models.grounding import load_grounding_model
from clipsam.train.captions import Concept
from clipsam.train.fit import fit_from_samples
from clipsam.train.negative_bank import BANK_FILE
from clipsam.train.presence_head import PresenceHeadConfig
from clipsam.train.recalibrate import recalibrate_presence, save_recalibrated
from synthetic_grounding import (
    NAMES,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    synthetic_store,
    write_labelled_set,
)
from test_fit import TINY, _subjects
from test_grounding import HashEncoder

ROOT = Path(__file__).resolve().parents[1]


def _exact(points: dict) -> dict:
    """Per-concept operating points as one flat mapping (pytest.approx compares flat ones)."""
    return {(c, p): t for c, ps in points.items() for p, t in ps.items()}


def _flat(points: dict):
    return pytest.approx(_exact(points))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model fitted on two synthetic sets (data under ``root``), and the same model as it
    would have been saved before operating points (``old``)."""
    root = tmp_path_factory.mktemp("recalibrate")
    held, kept = _subjects(3, 6, TINY.calibration_fraction)
    cache = root / "cache"
    write_labelled_set(root, "s0", 0, [held[0], *kept[:5], held[1]], cache, empty=(3, 6))
    write_labelled_set(root, "s1", 1, [held[2], held[1], *kept[2:6]], cache, seed=1)
    samples = list_samples(root / "s0") + list_samples(root / "s1")
    concepts = {f"s{i}": Concept(NAMES[i], (NAMES[i],)) for i in range(2)}
    model = fit_from_samples(samples, synthetic_store(cache), concepts, TINY, root / "model",
                             encoder=HashEncoder(), progress=False)
    old = root / "old"
    old.mkdir()
    for path in (root / "model").iterdir():
        (old / path.name).write_bytes(path.read_bytes())
    config = json.loads((old / "config.json").read_text())
    config["presence"] = {k: config["presence"][k] for k in ("top_k", "threshold")}
    for key in ("presence_points", "presence_heads", "presence_statistics"):
        config.pop(key)
    (old / "config.json").write_text(json.dumps(config))
    return root, model, old


def test_an_old_model_gets_every_operating_point_with_its_recall_thresholds(trained, tmp_path):
    root, fitted, old = trained
    model = load_grounding_model(old, text_encoder=HashEncoder())
    assert model.presence.balanced is None and not model.concept_points
    result = recalibrate_presence(model, root, synthetic_store(root / "cache"), recipe=TINY,
                                  progress=False)
    new = result.model
    # the same data and rule: the recall thresholds are unchanged, the others are those the
    # training-time calibration placed
    assert new.concept_thresholds == pytest.approx(fitted.concept_thresholds)
    assert _exact(new.concept_points) == _flat(fitted.concept_points)
    assert new.presence == fitted.presence
    for change in result.changes.values():
        assert change["recall_before"] == pytest.approx(change["recall"])
        assert change["recall"] <= change["balanced"] <= change["precision"]
    assert new.metadata["recalibrated"][-1]["images"] == fitted.metadata["calibration"]["images"]
    assert set(new.metadata["calibration"]["presence"]) == set(NAMES[:2])
    # heads and the other calibrated settings are kept
    assert new.heads is model.heads and new.mask_sources == model.mask_sources
    out = save_recalibrated(new, old, tmp_path / "new")
    assert (out / BANK_FILE).read_bytes() == (old / BANK_FILE).read_bytes()
    assert "recalibrated" in json.loads((out / "training.json").read_text())
    loaded = load_grounding_model(out, text_encoder=HashEncoder())
    assert _exact(loaded.concept_points) == _flat(fitted.concept_points)
    with pytest.raises(InputError, match="another folder"):
        save_recalibrated(new, old, old)


def test_presence_heads_can_be_fitted_on_the_recorded_training_subjects(trained):
    root, _, old = trained
    model = load_grounding_model(old, text_encoder=HashEncoder())
    result = recalibrate_presence(model, root, synthetic_store(root / "cache"),
                                  presence_head=PresenceHeadConfig(folds=2), recipe=TINY,
                                  progress=False)
    info = result.model.metadata["calibration"]
    # fitted on the 5 + 4 training images (s0's image 3 without its target)
    assert info["presence_head"][NAMES[0]]["n_present"] == 4
    assert info["presence_head"][NAMES[0]]["n_empty"] == 1
    # each concept's statistic is chosen and recorded; only chosen heads are kept
    for name in NAMES[:2]:
        assert set(info["presence"][name]["auc"]) == {"map", "head"}
        assert info["presence"][name]["statistic"] == result.model.statistic_of(name)
        assert result.changes[name]["statistic"] == result.model.statistic_of(name)
    assert set(result.model.presence_heads) == set(result.model.presence_statistics)
    assert result.model.metadata["recalibrated"][-1]["presence_head"]["folds"] == 2


def test_a_data_folder_that_is_not_the_models_is_refused(trained, tmp_path):
    root, _, old = trained
    model = load_grounding_model(old, text_encoder=HashEncoder())
    with pytest.raises(InputError, match="not a labelled set folder"):
        recalibrate_presence(model, tmp_path, synthetic_store(root / "cache"), recipe=TINY)
    other = tmp_path / "other"
    for name in ("s0", "s1"):
        (other / name).mkdir(parents=True)
        for part in ("images", "masks"):
            (other / name / part).symlink_to(root / name / part)
        (other / name / "meta.csv").write_text((root / name / "meta.csv").read_text())
    lines = (other / "s1" / "meta.csv").read_text().splitlines()
    (other / "s1" / "meta.csv").unlink()
    (other / "s1" / "meta.csv").write_text("\n".join(lines[:2]) + "\n")  # one image left
    with pytest.raises(InputError, match="calibration subjects"):
        recalibrate_presence(model, other, synthetic_store(root / "cache"), recipe=TINY)
    # an empty embedding store and no segmenter: the missing embeddings are refused
    with pytest.raises(InputError, match="no embedding"):
        recalibrate_presence(model, root, synthetic_store(tmp_path / "empty"), recipe=TINY,
                             progress=False)


def test_the_script_writes_a_recalibrated_model(trained, tmp_path, monkeypatch, capsys):
    """scripts/recalibrate_presence.py over the library, on the synthetic store."""
    import clipsam.models.grounding as grounding
    import clipsam.pipelines.registry as registry
    import clipsam.train.recalibrate as recalibrate

    root, fitted, old = trained

    class Store:
        store = synthetic_store(root / "cache")

    monkeypatch.setattr(registry, "load_segmenter", lambda config: Store())
    monkeypatch.setattr(grounding, "load_grounding_model",
                        lambda folder: load_grounding_model(folder, text_encoder=HashEncoder()))
    monkeypatch.setattr(recalibrate, "recipe_named", lambda name: TINY)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["recalibrate_presence.py", str(old), "--data", str(root),
                                      "--embedding-cache", str(root / "cache"), "--out",
                                      str(out), "--cached-only"])
    runpy.run_path(str(ROOT / "scripts" / "recalibrate_presence.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert f"saved {out}" in printed and f"{NAMES[0]} | map | " in printed
    loaded = load_grounding_model(out, text_encoder=HashEncoder())
    assert _exact(loaded.concept_points) == _flat(fitted.concept_points)
    assert replace(loaded.presence) == fitted.presence
