"""Fine-tuning a tiny CLIP backend: the loss falls, only the chosen blocks move, saves reload;
``clipsam finetune --text-model`` end to end on the tiny upstream-format checkpoints."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipsam.apps.cli import main
from clipsam.errors import InputError
from clipsam.io.labelled_sets import list_samples
from clipsam.models.clip import BiomedClip, OpenAIClip, load_image_text_model
from clipsam.train.captions import concept_for
from clipsam.train.clip_pairs import caption_pairs
from clipsam.train.finetune_clip import (
    FinetuneConfig,
    finetune_clip,
    group_batches,
    heldout_scores,
    pair_loss,
)
from test_clip_checkpoints import write_tiny_biomedclip, write_tiny_openai_clip

CAPTIONS = ["lung", "the lung", "x", "the x", "a photo", "a photo of the lung"]


def synthetic_pairs() -> list[tuple[np.ndarray, str]]:
    """Six distinct images (a bright square in a different place each), six captions."""
    pairs = []
    for i, caption in enumerate(CAPTIONS):
        image = np.full((40, 40), 20, np.uint8)
        row, col = divmod(i, 3)
        image[row * 20:row * 20 + 16, col * 13:col * 13 + 12] = 230
        pairs.append((image, caption))
    return pairs


def total_loss(model, pairs, config) -> float:
    with torch.no_grad():
        return float(pair_loss(model, [p[0] for p in pairs], [p[1] for p in pairs], config))


@pytest.mark.parametrize(("kind", "loss"), [("clip", "dhn_nce"), ("biomed", "info_nce")])
def test_finetuning_reduces_the_loss_and_saves_upstream_format(tmp_path, kind, loss):
    if kind == "clip":
        model = OpenAIClip.from_folder(write_tiny_openai_clip(tmp_path / "src"), "tiny")
    else:
        model = BiomedClip.from_folder(write_tiny_biomedclip(tmp_path / "src"))
    pairs = synthetic_pairs()
    config = FinetuneConfig(loss=loss, vision_blocks=1, text_blocks=1, epochs=8, batch_size=6,
                            lr=3e-3, weight_decay=0.0, seed=0)
    first_block = [p.clone() for p in model.vision_blocks[0].parameters()]
    last_block = [p.clone() for p in model.vision_blocks[-1].parameters()]
    before = total_loss(model, pairs, config)
    losses = finetune_clip(model, pairs, config, output_dir=tmp_path / "out").losses
    after = total_loss(model, pairs, config)
    assert len(losses) == 8 and np.isfinite(losses).all()
    assert after < before - 0.05
    assert all(torch.equal(a, b) for a, b in zip(first_block, model.vision_blocks[0].parameters(),
                                                  strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(
        last_block, model.vision_blocks[-1].parameters(), strict=True))
    assert not any(p.requires_grad for p in model.network.parameters())
    reloaded = type(model).from_folder(tmp_path / "out", model.name)
    np.testing.assert_allclose(reloaded.encode_text(CAPTIONS), model.encode_text(CAPTIONS),
                               atol=1e-5)
    images = [p[0] for p in pairs]
    np.testing.assert_allclose(reloaded.encode_images(images), model.encode_images(images),
                               atol=1e-5)


def test_same_seed_same_run(tmp_path):
    folder = write_tiny_openai_clip(tmp_path / "src")
    config = FinetuneConfig(epochs=2, batch_size=3, lr=1e-3, seed=3)
    runs = [finetune_clip(OpenAIClip.from_folder(folder, "t"), synthetic_pairs(), config).losses
            for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 4


def test_bad_configuration_is_an_input_error(tmp_path):
    model = OpenAIClip.from_folder(write_tiny_openai_clip(tmp_path / "src"), "t")
    with pytest.raises(InputError, match="at least 3"):
        finetune_clip(model, synthetic_pairs()[:2], FinetuneConfig())
    with pytest.raises(InputError, match="unknown loss"):
        finetune_clip(model, synthetic_pairs(), FinetuneConfig(loss="triplet"))
    with pytest.raises(InputError, match="unfreeze"):
        finetune_clip(model, synthetic_pairs(), FinetuneConfig(vision_blocks=9))


# --- clipsam finetune --text-model: end to end on the tiny upstream-format checkpoints ----------

LOOKS = ("lung", "head", "polyp")
MODELS = {"clip-vit-b32": write_tiny_openai_clip, "biomedclip": write_tiny_biomedclip}


def look(kind: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """A 48 x 48 image of one of three looks (a bright square, a disc, stripes), and its mask."""
    rng = np.random.default_rng(index)
    yy, xx = np.mgrid[:48, :48]
    shift = int(rng.integers(-4, 5))
    if kind == "lung":
        mask = (abs(yy - 16 - shift) < 9) & (abs(xx - 16) < 9)
    elif kind == "head":
        mask = (yy - 26) ** 2 + (xx - 26 - shift) ** 2 < 150
    else:
        mask = (yy + shift) % 12 < 5
    image = np.where(mask, 210, 40) + rng.normal(0, 8, mask.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def make_sets(root: Path, per_set: int = 12) -> list[Path]:
    folders = []
    for kind in LOOKS:
        folder = root / f"set_{kind}"
        for sub in ("images", "masks"):
            (folder / sub).mkdir(parents=True)
        for index in range(per_set):
            image, mask = look(kind, index)
            Image.fromarray(image).save(folder / "images" / f"{kind}{index}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                folder / "masks" / f"{kind}{index}.png")
        folders.append(folder)
    return folders


def finetune_command(data: list[Path], name: str, weights: Path, out: Path, *extra: str) -> list:
    return ["finetune", "--data", *map(str, data), "--prompt", *LOOKS, "--text-model", name,
            "--weights-dir", str(weights), "--out", str(out), "--epochs", "6",
            "--batch-size", "3", "--lr", "3e-3", "--seed", "1", "-q", *extra]


@pytest.mark.parametrize("name", list(MODELS))
def test_finetune_command_trains_records_and_saves_a_loadable_model(tmp_path, name):
    data = make_sets(tmp_path / "data")
    weights = MODELS[name](tmp_path / "weights")
    out = tmp_path / "out"
    assert main(finetune_command(data, name, weights, out, "--unfreeze-blocks", "1")) == 0

    record = json.loads((out / "training.json").read_text())
    assert record["text_model"] == name and record["device"] == "cpu"
    assert record["config"]["loss"] == "dhn_nce" and record["config"]["vision_blocks"] == 1
    assert record["warnings"] == []  # the held-out loss fell: the model learned
    curve = record["curve"]
    assert [p["epoch"] for p in curve] == list(range(7))
    assert len(record["losses"]) == sum(p["steps"] for p in curve[1:])
    assert curve[-1]["validation"]["loss"] < curve[0]["validation"]["loss"]
    train, held = record["subjects"]["train"], record["subjects"]["heldout"]
    assert record["pairs"] == {"train": 29, "heldout": 7}
    assert all(not set(held[s]) & set(train[s]) for s in held)
    for saved in record["saved_files"]:
        assert hashlib.sha256((out / saved["file"]).read_bytes()).hexdigest() == saved["sha256"]
    sources = {f["file"]: f["sha256"] for f in record["source_files"]}
    assert sources == {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                       for p in weights.iterdir()}

    # the saved weights are the trained ones: the loader reads them back and scores the
    # held-out pairs as recorded; only the last vision block (and the heads) moved
    original = load_image_text_model(name, weights)
    tuned = load_image_text_model(name, out)
    samples = [s for folder in data for s in list_samples(folder)]
    concepts = {f"set_{kind}": concept_for(f"set_{kind}", kind) for kind in LOOKS}
    split = caption_pairs(samples, concepts)
    config = FinetuneConfig(**record["config"])
    again = heldout_scores(tuned, split.heldout, split.heldout_groups, config)
    assert again["loss"] == pytest.approx(curve[-1]["validation"]["loss"], abs=1e-5)
    assert again["retrieval_accuracy"] == curve[-1]["validation"]["retrieval_accuracy"]
    before = heldout_scores(original, split.heldout, split.heldout_groups, config)
    assert before["loss"] == pytest.approx(curve[0]["validation"]["loss"], abs=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(
        original.vision_blocks[0].parameters(), tuned.vision_blocks[0].parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(
        original.vision_blocks[-1].parameters(), tuned.vision_blocks[-1].parameters(),
        strict=True))


def test_finetune_command_warns_when_the_model_did_not_learn(tmp_path, capsys):
    data = make_sets(tmp_path / "data")
    weights = write_tiny_openai_clip(tmp_path / "weights")
    command = finetune_command(data, "clip-vit-b32", weights, tmp_path / "out")
    command[command.index("--lr") + 1] = "1e-9"
    assert main(command) == 0
    record = json.loads((tmp_path / "out" / "training.json").read_text())
    assert any("did not learn" in w for w in record["warnings"])
    assert "warning: the model did not learn" in capsys.readouterr().out


def test_finetune_command_from_a_caption_table(tmp_path):
    rows = ["filepath,title"]
    folder = tmp_path / "table"
    folder.mkdir()
    for kind in LOOKS:
        for index in range(12):
            Image.fromarray(look(kind, index)[0]).save(folder / f"{kind}{index}.png")
            rows.append(f"{kind}{index}.png,a photo of the {kind}")
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")
    weights = write_tiny_biomedclip(tmp_path / "weights")
    out = tmp_path / "out"
    assert main(["finetune", "--captions", str(folder / "captions.csv"), "--text-model",
                 "biomedclip", "--weights-dir", str(weights), "--out", str(out), "--epochs", "2",
                 "--batch-size", "3", "--lr", "1e-3", "-q"]) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["pairs"]["train"] + record["pairs"]["heldout"] == 36
    [held] = record["subjects"]["heldout"].values()  # a table's subjects: its images' paths
    kinds = {re.match("[a-z]+", Path(subject).stem).group() for subject in held}
    assert kinds <= set(LOOKS)
    assert record["curve"][0]["validation"]["captions"] == len(kinds)  # one caption per kind
    assert load_image_text_model("biomedclip", out).name == "biomedclip"


CLIP = ["--text-model", "clip-vit-b32", "--weights-dir", "WEIGHTS"]


@pytest.mark.parametrize(("extra", "message"), [
    ([*CLIP, "--recipe", "builtin"], "--recipe trains the grounding"),
    ([*CLIP, "--out", "WEIGHTS"], "holds the weights"),
    (["--text-model", "no-such-clip"], "unknown image-text model"),
    (["--unfreeze-blocks", "1"], "--unfreeze-blocks fine-tunes an image-text model"),
    (["--weights-dir", "WEIGHTS"], "--weights-dir fine-tunes an image-text model"),
    ([*CLIP, "--unfreeze-blocks", "9"], "cannot unfreeze"),
])
def test_finetune_command_refusals_are_one_line(tmp_path, capsys, extra, message):
    data = make_sets(tmp_path / "data", per_set=4)
    weights = write_tiny_openai_clip(tmp_path / "weights")
    extra = [str(weights) if e == "WEIGHTS" else e for e in extra]
    command = ["finetune", "--data", *map(str, data), "--prompt", *LOOKS, "-q",
               "--out", str(tmp_path / "out"), *extra]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("clipsam: error:")


def test_group_batches_never_put_one_group_twice_in_a_batch():
    groups = ["a"] * 7 + ["b"] * 3 + ["c"] * 2 + ["d"]
    order = np.random.default_rng(0).permutation(len(groups))
    batches = group_batches(groups, order, 3)
    assert sorted(i for b in batches for i in b) == list(range(len(groups)))
    assert all(len(b) <= 3 and len({groups[i] for i in b}) == len(b) for b in batches)
    assert len(batches[0]) == 3
