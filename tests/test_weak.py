"""Weak supervision on synthetic discs: pseudo-masks from a thresholding stand-in cascade."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from clipsam.config import WeakTrainConfig
from clipsam.errors import InputError, WeightsError
from clipsam.eval.metrics import dice
from clipsam.io.masks import read_mask
from clipsam.models.weak_net import WeakModel, WeakModelConfig
from clipsam.pipelines.base import PipelineResult
from clipsam.pipelines.weak import WeakPipeline
from clipsam.train.seg_losses import weighted_dice_bce
from clipsam.train.weak import (
    EvalReport,
    cosine_learning_rate,
    train_weak,
    training_set,
    training_tensors,
)
from clipsam.train.weak_pseudo import (
    UnlabelledImage,
    make_pseudo_masks,
    pseudo_mask_path,
    teacher_disagreement,
    unsure_mask_path,
)

SIZE = 64
TINY = WeakTrainConfig(size=32, steps=150, cycles=2, batch_size=4, learning_rate=1e-2,
                       features=(8, 16, 32), seed=3, not_found="background")


def disc_image(rng: np.random.Generator, with_disc: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A noisy 64 x 64 uint8 image, bright disc (radius 8-14) at a random place, and its mask."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    radius = rng.uniform(8, 14)
    cy, cx = rng.uniform(radius + 2, SIZE - radius - 2, size=2)
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2) & with_disc
    image = 60 + 130 * mask + rng.normal(0, 12, (SIZE, SIZE))
    return np.clip(image, 0, 255).astype(np.uint8), mask


class ThresholdCascade:
    """Stand-in for the text-prompted cascade: the bright pixels are the target."""

    name = "threshold"

    def __init__(self) -> None:
        self.calls = 0

    def run(self, image, prompt, embedding=None, keep_intermediates=False) -> PipelineResult:
        self.calls += 1
        mask = np.asarray(image) > 125
        return PipelineResult(mask=mask, found=bool(mask.any()), boxes=np.zeros((0, 4)),
                                  scores=np.zeros(0), prompt=prompt, method=self.name)


def write_images(folder: Path, count: int, seed: int) -> list[tuple[UnlabelledImage, np.ndarray]]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    items = []
    for index in range(count):
        image, mask = disc_image(rng, with_disc=index % 6 != 5)
        path = folder / f"img_{index:02d}.png"
        Image.fromarray(image).save(path)
        items.append((UnlabelledImage(path.stem, path), mask))
    return items


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread, especially on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[tuple[UnlabelledImage, np.ndarray]]]:
    root = tmp_path_factory.mktemp("weak")
    train_items = write_images(root / "train", 24, seed=0)
    held_out = write_images(root / "test", 8, seed=1)
    train_weak([item for item, _ in train_items], ThresholdCascade(), "bright disc",
               root / "model", TINY, progress=False)
    return root / "model", held_out


def test_pseudo_masks_are_cached_and_empty_when_not_found(trained):
    model_dir, _ = trained
    config = WeakModelConfig.load(model_dir)
    assert [item.pseudo_found for item in config.data] == [i % 6 != 5 for i in range(24)]
    assert all(item.used for item in config.data)  # TINY trains them as background
    assert not read_mask(pseudo_mask_path(model_dir, "img_05")).any()
    assert read_mask(pseudo_mask_path(model_dir, "img_00")).any()


def test_training_writes_model_folder(trained):
    model_dir, _ = trained
    config = WeakModelConfig.load(model_dir)
    assert config.members == ("member_0.safetensors", "member_1.safetensors")
    assert config.steps_completed == TINY.steps
    assert config.in_channels == 1 and config.prompt == "bright disc"
    assert config.pseudo_method == "threshold" and config.train == TINY
    assert all((model_dir / name).is_file() for name in config.members)


def test_network_segments_held_out_images(trained):
    model_dir, held_out = trained
    pipeline = WeakPipeline(model_dir)
    scores = []
    for item, truth in held_out:
        image = np.asarray(Image.open(item.path))
        result = pipeline.run(image, "bright disc")
        assert result.mask.shape == image.shape and result.mask.dtype == bool
        assert result.found == bool(result.mask.any())
        scores.append(dice(result.mask, truth))
    assert np.mean(scores) > 0.8, scores


def test_uncertainty_is_higher_on_the_boundary(trained):
    model_dir, held_out = trained
    item, truth = held_out[0]
    image = np.asarray(Image.open(item.path))
    result = WeakPipeline(model_dir).run(image, "bright disc", keep_intermediates=True)
    uncertainty = result.intermediates["uncertainty"]
    assert uncertainty.shape == image.shape == result.intermediates["member_std"].shape
    distance = np.where(truth, ndimage.distance_transform_edt(truth),
                        ndimage.distance_transform_edt(~truth))
    boundary = uncertainty[distance <= 1.5].mean()
    far = uncertainty[distance >= 12].mean()
    assert boundary > 1.5 * far, (boundary, far)


def test_rerun_reuses_pseudo_masks_and_rejects_other_prompt(trained, tmp_path):
    model_dir, _ = trained
    config = WeakModelConfig.load(model_dir)
    items = [UnlabelledImage(d.id, Path(d.image)) for d in config.data[:4]]
    cascade = ThresholdCascade()
    quick = WeakTrainConfig(size=32, steps=2, cycles=1, features=(8, 16), seed=0)
    copy = tmp_path / "model"
    for item in items:
        for path in (pseudo_mask_path, unsure_mask_path):
            path(copy, item.id).parent.mkdir(parents=True, exist_ok=True)
            path(copy, item.id).write_bytes(path(model_dir, item.id).read_bytes())
    (copy / "pseudo" / "source.json").write_bytes(
        (model_dir / "pseudo" / "source.json").read_bytes())
    train_weak(items, cascade, "bright disc", copy, quick, progress=False)
    assert cascade.calls == 0
    with pytest.raises(InputError, match="pseudo-masks for prompt 'bright disc'"):
        train_weak(items, cascade, "dark disc", copy, quick, progress=False)
    with pytest.raises(InputError, match="with settings ''"):  # another teacher's settings
        train_weak(items, cascade, "bright disc", copy, quick, progress=False, teacher="0f1e")


def test_resume_continues_from_the_saved_evaluation(tmp_path):
    items = [item for item, _ in write_images(tmp_path / "train", 8, seed=2)]
    config = WeakTrainConfig(size=32, steps=8, cycles=2, batch_size=4, features=(8, 16), seed=1,
                             eval_every=2)
    straight = train_weak(items, ThresholdCascade(), "disc", tmp_path / "a", config,
                          progress=False)

    class Killed(Exception):
        pass

    def kill_after_four(report: EvalReport) -> None:
        if report.steps_completed == 4:
            raise Killed

    with pytest.raises(Killed):
        train_weak(items, ThresholdCascade(), "disc", tmp_path / "b", config, progress=False,
                   on_eval=kill_after_four)
    assert WeakModelConfig.load(tmp_path / "b").steps_completed == 4
    seen: list[int] = []
    resumed = train_weak(items, ThresholdCascade(), "disc", tmp_path / "b", config,
                         resume=True, progress=False,
                         on_eval=lambda r: seen.append(r.steps_completed))
    assert seen == [5, 6, 8]  # evaluations every 2 steps and at the cycle ends (5, 8)
    assert resumed.members == straight.members == ("member_0.safetensors",
                                                    "member_1.safetensors")
    assert resumed.history == straight.history and resumed.agreement == straight.agreement
    assert resumed.member_origins == straight.member_origins
    for a, b in zip(WeakModel(tmp_path / "a").members, WeakModel(tmp_path / "b").members,
                    strict=True):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(),
                                     strict=True):
            assert torch.allclose(x, y, atol=1e-6), name
    with pytest.raises(InputError, match="other training settings"):
        train_weak(items, ThresholdCascade(), "disc", tmp_path / "b",
                   WeakTrainConfig(size=32, steps=12, cycles=2, features=(8, 16), seed=1),
                   resume=True, progress=False)


def test_learning_rate_restarts_each_cycle():
    config = WeakTrainConfig(steps=400, cycles=3, learning_rate=1e-2, min_learning_rate=1e-4)
    assert config.cycle_ends() == (200, 300, 400)  # the first cycle, from scratch, is longer
    starts = [cosine_learning_rate(config, step) for step in (0, 200, 300)]
    assert starts == pytest.approx([1e-2] * 3)
    assert cosine_learning_rate(config, 199) < 2e-4 and cosine_learning_rate(config, 299) < 2e-4
    assert cosine_learning_rate(config, 100) < cosine_learning_rate(config, 10)
    assert WeakTrainConfig(steps=4, cycles=3).cycle_ends() == (2, 3, 4)
    with pytest.raises(InputError, match="at least 4: the first cycle is twice as long"):
        WeakTrainConfig(steps=3, cycles=3)
    with pytest.raises(InputError, match="cycles must be at least 1"):
        WeakTrainConfig(cycles=0)


def test_nothing_found_and_bad_folders_are_one_line_errors(tmp_path):
    items = [item for item, _ in write_images(tmp_path / "train", 2, seed=4)]

    class NeverFinds(ThresholdCascade):
        def run(self, image, prompt, embedding=None, keep_intermediates=False):
            empty = np.zeros(np.asarray(image).shape[:2], bool)
            return PipelineResult(mask=empty, found=False, boxes=np.zeros((0, 4)),
                                      scores=np.zeros(0), prompt=prompt, method=self.name)

    with pytest.raises(InputError, match="in none of the 2 images"):
        train_weak(items, NeverFinds(), "disc", tmp_path / "m", TINY, progress=False)
    with pytest.raises(WeightsError, match="not a weak-supervision model folder"):
        WeakPipeline(tmp_path / "nowhere")
    with pytest.raises(InputError, match="multiple of 4"):
        WeakTrainConfig(size=30, features=(8, 16, 32))


class MapCascade(ThresholdCascade):
    """Like :class:`ThresholdCascade`, with a coarse map mask that also covers a 4-pixel band
    below the disc: the teacher's map and mask disagree there."""

    name = "map-cascade"

    def run(self, image, prompt, embedding=None, keep_intermediates=False) -> PipelineResult:
        result = super().run(image, prompt, embedding, keep_intermediates)
        coarse = result.mask | np.roll(result.mask, 4, axis=0)
        return PipelineResult(mask=result.mask, found=result.found, boxes=result.boxes,
                              scores=result.scores, prompt=prompt, method=self.name,
                              intermediates={"coarse_mask": coarse})


def test_teacher_disagreement_is_where_map_and_mask_differ():
    image, _ = disc_image(np.random.default_rng(7))
    result = MapCascade().run(image, "disc", keep_intermediates=True)
    unsure = teacher_disagreement(result)
    assert unsure.any() and not (unsure & result.mask).any()  # the band below the disc only
    assert np.array_equal(unsure, result.intermediates["coarse_mask"] & ~result.mask)
    assert not teacher_disagreement(ThresholdCascade().run(image, "disc")).any()  # no map
    odd = PipelineResult(mask=result.mask, found=True, boxes=result.boxes, scores=result.scores,
                         prompt="disc", method="odd",
                         intermediates={"coarse_mask": result.mask[:-1]})
    with pytest.raises(ValueError, match="coarse mask of shape"):
        teacher_disagreement(odd)


def test_weights_negatives_and_not_found_rules(tmp_path):
    items = [item for item, _ in write_images(tmp_path / "train", 6, seed=5)]  # img_05: empty
    negatives = [item for item, _ in write_images(tmp_path / "neg", 1, seed=6)]
    found = make_pseudo_masks(items, MapCascade(), "disc", tmp_path / "m", progress=False)
    assert found == {f"img_{i:02d}": i != 5 for i in range(6)}
    assert read_mask(unsure_mask_path(tmp_path / "m", "img_00")).any()
    config = WeakTrainConfig(size=32, features=(8, 16, 32), uncertain_weight=0.25)
    # the negative's name clashes with a target image's
    with pytest.raises(InputError, match="share a name"):
        train_weak(items, MapCascade(), "disc", tmp_path / "m", config, progress=False,
                   negatives=negatives)
    negatives = [UnlabelledImage("negative_0", negatives[0].path)]
    chosen = training_set(items, found, negatives, config)
    assert [(i.used, i.negative) for i in chosen] == [(True, False)] * 5 + [(False, False),
                                                                           (True, True)]
    tensors = training_tensors(chosen, tmp_path / "m", config)
    inputs, targets, weights = tensors.inputs, tensors.targets, tensors.weights
    assert inputs.shape == (6, 1, 32, 32) and tensors.in_channels == 1
    assert torch.equal(targets[-1], torch.zeros(1, 32, 32))  # the negative: background
    assert set(weights.unique().tolist()) == {0.25, 1.0} and weights[-1].min() == 1.0
    unsure = network_target_of(unsure_mask_path(tmp_path / "m", "img_00"), 32)
    assert torch.equal(weights[0] == 0.25, unsure > 0)
    background = training_set(items, found, (), WeakTrainConfig(size=32, not_found="background",
                                                                features=(8, 16, 32)))
    assert all(item.used for item in background)
    with pytest.raises(InputError, match="not-found rule"):
        WeakTrainConfig(not_found="guess")
    with pytest.raises(InputError, match="uncertain weight"):
        WeakTrainConfig(uncertain_weight=1.5)


def network_target_of(path: Path, size: int) -> torch.Tensor:
    from clipsam.train.weak_data import network_target

    return network_target(read_mask(path), size)


def test_weighted_loss_matches_monai_and_ignores_zero_weight_pixels():
    from monai.losses import DiceCELoss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, generator=generator)
    targets = (torch.rand(3, 1, 8, 8, generator=generator) > 0.6).float()
    ones = torch.ones_like(logits)
    expected = DiceCELoss(sigmoid=True, batch=True)(logits, targets)
    assert weighted_dice_bce(logits, targets, ones).item() == pytest.approx(expected.item(),
                                                                           rel=1e-4)
    weights = ones.clone()
    weights[:, :, :4] = 0.0
    changed = logits.clone()
    changed[:, :, :4] = 100.0  # wrong and confident, but weightless
    assert weighted_dice_bce(changed, targets, weights).item() == pytest.approx(
        weighted_dice_bce(logits, targets, weights).item(), rel=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        weighted_dice_bce(logits, targets, ones[:1])


class BoxSegmenter:
    """Box-only stand-in: a box's mask is the box filled; counts encodings."""

    name = "boxes"
    supports_points = False

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, image):
        from clipsam.models.segmenter import Geometry, ImageEmbedding

        self.encoded += 1
        h, w = np.asarray(image).shape[:2]
        return ImageEmbedding(np.zeros((1, 1, 4, 4), np.float32), Geometry((h, w), (h, w), 64),
                              self.name)

    def predict(self, embedding, boxes=None, points=None, point_labels=None):
        from clipsam.models.segmenter import MaskPrediction

        h, w = embedding.geometry.original_size
        masks = np.zeros((len(boxes), h, w), bool)
        for mask, (x1, y1, x2, y2) in zip(masks, np.asarray(boxes).astype(int), strict=True):
            mask[y1:y2, x1:x2] = True
        return MaskPrediction(masks, np.zeros((len(boxes), 4, 4), np.float32),
                              np.full(len(boxes), 0.9, np.float32))


def test_weak_box_prompts_the_segmenter_with_the_networks_boxes(trained):
    model_dir, held_out = trained
    segmenter = BoxSegmenter()
    pipeline = WeakPipeline(model_dir, segmenter=segmenter)
    assert pipeline.name == "weak-box"
    item, _ = held_out[0]
    image = np.asarray(Image.open(item.path))
    result = pipeline.run(image, "bright disc", keep_intermediates=True)
    network = result.intermediates["coarse_mask"]
    assert len(result.boxes) == 1 and segmenter.encoded == 1
    x1, y1, x2, y2 = result.boxes[0].astype(int)
    assert result.mask[y1:y2, x1:x2].all() and result.mask.sum() == (x2 - x1) * (y2 - y1)
    ys, xs = np.nonzero(network)
    assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    empty, _ = disc_image(np.random.default_rng(12), with_disc=False)  # noise alone
    absent = pipeline.run(empty, "bright disc")  # not found, and never encoded
    assert not absent.found and segmenter.encoded == 1


def test_self_training_takes_the_network_and_segmenter_as_teacher(trained, tmp_path):
    model_dir, held_out = trained
    teacher = WeakPipeline(model_dir, segmenter=BoxSegmenter())
    items = [item for item, _ in held_out]
    config = train_weak(items, teacher, "bright disc", tmp_path / "round_1",
                        WeakTrainConfig(size=32, steps=2, cycles=1, features=(8, 16)),
                        encoder=teacher.segmenter, progress=False)
    assert config.pseudo_method == "weak-box" and config.members
    image = np.asarray(Image.open(items[0].path))
    network = teacher.run(image, "bright disc", keep_intermediates=True)
    mask = read_mask(pseudo_mask_path(tmp_path / "round_1", items[0].id))
    unsure = read_mask(unsure_mask_path(tmp_path / "round_1", items[0].id))
    assert np.array_equal(mask, network.mask)  # the segmenter's answer to the network's box
    assert np.array_equal(unsure, mask != network.intermediates["coarse_mask"])
    assert unsure.any() and not (unsure & network.intermediates["coarse_mask"]).any()


class PatchFeatures(BoxSegmenter):
    """Stand-in encoder with informative features: each 4 x 4 cell's mean and spread of
    intensity on a (16, 16) grid over the 64-px input (the image letterboxed into it)."""

    name = "patch-features"

    def encode(self, image):
        from clipsam.models.segmenter import Geometry, ImageEmbedding

        self.encoded += 1
        pixels = np.asarray(image, np.float32) / 255.0
        h, w = pixels.shape[:2]
        canvas = np.zeros((64, 64), np.float32)
        canvas[:h, :w] = pixels
        cells = canvas.reshape(16, 4, 16, 4)
        features = np.stack([cells.mean(axis=(1, 3)), cells.std(axis=(1, 3)),
                             np.ones((16, 16), np.float32)])
        return ImageEmbedding(features[None], Geometry((h, w), (h, w), 64), self.name)


def test_head_network_learns_on_the_segmenters_embedding(tmp_path):
    train_items = write_images(tmp_path / "train", 16, seed=8)
    held_out = write_images(tmp_path / "test", 6, seed=9)
    encoder = PatchFeatures()
    config = train_weak([item for item, _ in train_items], ThresholdCascade(), "bright disc",
                        tmp_path / "head", WeakTrainConfig(network="head", steps=80, cycles=2,
                                                           batch_size=4, learning_rate=1e-2,
                                                           seed=2),
                        encoder=encoder, progress=False)
    assert config.in_channels == 3 and config.feature_model == "patch-features"
    used = sum(item.used for item in config.data)
    assert used == 14 and encoder.encoded == 16  # training reused the teacher's embeddings
    # With the pseudo-masks cached, training encodes what it uses, to the same inputs.
    again = PatchFeatures()
    tensors = training_tensors(config.data, tmp_path / "head", config.train, again)
    kept = {}
    make_pseudo_masks([item for item, _ in train_items], ThresholdCascade(), "bright disc",
                      tmp_path / "kept", PatchFeatures(), progress=False, keep=kept)
    assert again.encoded == used and len(kept) == 16
    assert torch.equal(tensors.inputs, training_tensors(config.data, tmp_path / "head",
                                                        config.train, None, kept).inputs)
    with pytest.raises(InputError, match="give the encoder"):
        training_tensors(config.data, tmp_path / "head", config.train)
    pipeline = WeakPipeline(tmp_path / "head", segmenter=PatchFeatures(), decode=False)
    assert pipeline.name == "weak"
    scores = []
    for item, truth in held_out:
        image = np.asarray(Image.open(item.path))
        result = pipeline.run(image, "bright disc", keep_intermediates=True)
        assert result.mask.shape == result.intermediates["uncertainty"].shape == image.shape
        scores.append(dice(result.mask, truth) if truth.any() else float(not result.found))
    assert np.mean(scores) > 0.75, scores
    assert pipeline.segmenter.encoded == len(held_out)  # once per image, not decoded
    with pytest.raises(InputError, match="reads the embedding of the segmenter"):
        WeakPipeline(tmp_path / "head")
    other = BoxSegmenter().encode(image)
    with pytest.raises(InputError, match="learned embeddings of 'patch-features'"):
        WeakModel(tmp_path / "head").predict(image, other)
    with pytest.raises(InputError, match="unknown weak network"):
        WeakTrainConfig(network="transformer")


class TruthCascade(ThresholdCascade):
    """Stand-in teacher whose pseudo-masks are the true masks of the images it was given."""

    name = "truth"

    def __init__(self, items: list[tuple[UnlabelledImage, np.ndarray]]) -> None:
        super().__init__()
        self.masks = {np.asarray(Image.open(item.path)).tobytes(): mask for item, mask in items}

    def run(self, image, prompt, embedding=None, keep_intermediates=False) -> PipelineResult:
        mask = self.masks[np.asarray(image).astype(np.uint8).tobytes()]
        return PipelineResult(mask=mask, found=bool(mask.any()), boxes=np.zeros((0, 4)),
                              scores=np.zeros(0), prompt=prompt, method=self.name)


def write_discs(folder: Path, count: int, seed: int) -> list[tuple[UnlabelledImage, np.ndarray]]:
    """256 x 256 images of noise (sd 30) with a bright disc of radius 30-60 px, and its mask."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:256, :256]
    items = []
    for index in range(count):
        radius = rng.uniform(30, 60)
        cy, cx = rng.uniform(radius + 8, 256 - radius - 8, size=2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
        image = np.clip(80 + 90 * mask + rng.normal(0, 30, mask.shape), 0, 255).astype(np.uint8)
        path = folder / f"disc_{index:02d}.png"
        Image.fromarray(image).save(path)
        items.append((UnlabelledImage(path.stem, path), mask))
    return items


def test_default_student_learns_discs_from_a_few_dozen_images(tmp_path):
    """Issue #27: the shipped defaults, with only a small step budget, learn the pseudo-masks
    of a few dozen 256-px images (MONAI's U-Net asked for one output channel ends in an
    instance norm of that channel: its background stayed near probability 0.5 here)."""
    items = write_discs(tmp_path / "discs", 24, seed=11)
    config = train_weak([item for item, _ in items], TruthCascade(items), "bright disc",
                        tmp_path / "model", WeakTrainConfig(steps=20), progress=False)
    model = WeakModel(tmp_path / "model")
    trained_on = {item.id for item in config.data if item.used and not item.held_out}
    scores = [dice(model.predict(np.asarray(Image.open(item.path))).probability > 0.5, mask)
              for item, mask in items if item.id in trained_on]
    assert len(scores) == 19 and np.mean(scores) >= 0.8, scores
    assert len(config.held_out) == 5 and config.agreement >= 0.8 and not config.warning
