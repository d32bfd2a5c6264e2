"""The Ray engine writes the same outputs as the local engine (small local Ray, 2 actors)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.apps.batch import SegmentJob, collect_inputs, run_local
from clipsam.config import RunConfig
from clipsam.pipelines.provenance import run_identity
from real_resources import import_or_skip
from test_api import fake_segmenter, sample_image


@pytest.fixture(scope="module")
def local_ray():
    ray = import_or_skip("ray", "pip install 'clipsam[ray]'")
    import_or_skip("ray.data", "pip install 'clipsam[ray]'")
    tests_dir = str(Path(__file__).parent)
    path = os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024,
             runtime_env={"env_vars": {"PYTHONPATH": path}}, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def make_folder(root: Path) -> Path:
    folder = root / "in"
    for index in range(5):
        pixels = np.roll(sample_image(), 3 * index, axis=1)
        path = folder / f"case{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
    (folder / "zz_broken.png").write_bytes(b"broken")
    return folder


def test_ray_outputs_equal_local_outputs(local_ray, tmp_path):
    from clipsam.apps.ray_engine import run_ray

    folder = make_folder(tmp_path)
    prompts = ("bright square", "absent thing")
    items = collect_inputs([str(folder)])
    settings = run_identity(RunConfig()).key
    plain = run_local(items, SegmentJob(prompts, tmp_path / "plain", settings), fake_segmenter)
    job = SegmentJob(prompts, tmp_path / "ray", settings)
    distributed = run_ray(items, job, fake_segmenter, workers=2)
    assert (plain.done, len(plain.failed)) == (distributed.done, len(distributed.failed)) == (5, 1)
    assert distributed.failed[0][0].endswith("zz_broken.png")
    assert "cannot read" in distributed.failed[0][1]
    for mask in sorted((tmp_path / "plain").glob("*_mask.png")):
        local = np.asarray(Image.open(mask))
        remote = np.asarray(Image.open(tmp_path / "ray" / mask.name))
        assert np.array_equal(local, remote), mask.name
    assert len(list((tmp_path / "ray").glob("*_mask.png"))) == 10
    record = json.loads((tmp_path / "ray" / "case0.json").read_text())
    assert [r["found"] for r in record["results"]] == [True, False]

    (folder / "zz_broken.png").unlink()
    again = run_ray(collect_inputs([str(folder)]), job, fake_segmenter, workers=2)
    assert (again.done, again.skipped, len(again.failed)) == (0, 5, 0)


def test_ray_spreads_volumes_and_gives_the_local_masks(local_ray, tmp_path):
    """One task per volume (two volumes and an image), consistent mode: the same NIfTI masks
    and records as the local engine."""
    import nibabel as nib

    from clipsam.apps.ray_engine import run_ray
    from clipsam.io.nifti import slices_to_nifti
    from synthetic_volume import PROMPT, bright_segmenter, volume_pixels

    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(2):
        pixels = np.roll(volume_pixels(), 3 * index, axis=2)
        nib.save(nib.Nifti1Image(slices_to_nifti(pixels), np.diag([1.0, 1.0, 3.0, 1.0])),
                 folder / f"vol{index}.nii.gz")
    Image.fromarray(volume_pixels()[4]).save(folder / "plane.png")
    items = collect_inputs([str(folder)])
    settings = run_identity(RunConfig()).key
    plain = run_local(items, SegmentJob((PROMPT,), tmp_path / "plain", settings),
                      bright_segmenter)
    distributed = run_ray(items, SegmentJob((PROMPT,), tmp_path / "ray", settings),
                          bright_segmenter, workers=2)
    assert plain.done == distributed.done == 3 and not distributed.failed
    for name in ("vol0", "vol1"):
        local = np.asarray(nib.load(tmp_path / "plain" / f"{name}_mask.nii.gz").dataobj)
        remote = np.asarray(nib.load(tmp_path / "ray" / f"{name}_mask.nii.gz").dataobj)
        assert local.any() and np.array_equal(local, remote), name
        records = [json.loads((tmp_path / run / f"{name}.json").read_text())["results"][0]
                   for run in ("plain", "ray")]
        assert records[0]["decisions"] == records[1]["decisions"]
        assert records[0]["decisions"]["volume"]["propagated_slices"] == [5]
