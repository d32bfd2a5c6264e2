"""The web server: page, health, POST /segment, and a clear 4xx for every limit."""

from __future__ import annotations

import base64
import gzip
import io
import json
import time

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clipsam.api import Segmenter
from clipsam.apps.server import ServerLimits, create_app, view_pictures
from clipsam.config import RunConfig
from clipsam.pipelines.timing import StageTimer
from conftest import BoxFillingSegmenter
from test_api import FakeEncoder, FakePipeline, sample_image


class SlowPipeline(FakePipeline):
    def run(self, image, prompt, embedding=None, keep_intermediates=False):
        if prompt.startswith("slow"):
            time.sleep(2.0)
        return super().run(image, prompt, embedding, keep_intermediates)


class StagedPipeline(FakePipeline):
    """"stages ..." prompts first run 60 timed stages of 0.05 s; counts the stages started."""

    started = 0

    def run(self, image, prompt, embedding=None, keep_intermediates=False):
        if prompt.startswith("stages"):
            timer = StageTimer()
            for index in range(60):
                with timer(f"stage{index}"):
                    StagedPipeline.started += 1
                    time.sleep(0.05)
        return super().run(image, prompt, embedding, keep_intermediates)


def make_client(limits: ServerLimits, pipeline=SlowPipeline) -> TestClient:
    pool: dict[tuple[str, str], Segmenter] = {}

    def segmenter_for(method: str, presence: str) -> Segmenter:
        if (method, presence) not in pool:
            config = RunConfig(method=method, keep_intermediates=True, presence=presence)
            pool[method, presence] = Segmenter(config, pipeline=pipeline(),
                                               encoder=FakeEncoder())
        return pool[method, presence]

    return TestClient(create_app(segmenter_for, limits))


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def post(client, data: bytes, prompts=("bright square",), name="scan.png", **fields):
    form = {"prompt": list(prompts), **fields}
    return client.post("/segment", files={"image": (name, data, "image/png")}, data=form)


def decode_png(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


@pytest.fixture(scope="module")
def client():
    client = make_client(ServerLimits(max_upload_bytes=50_000, max_side=100, max_prompts=2,
                                      max_prompt_chars=40, request_seconds=1.0))
    assert post(client, png_bytes(sample_image())).status_code == 200  # warm up imports
    return client


def test_page_and_health(client):
    assert client.get("/health").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and 'id="prompt"' in page.text and "segment" in page.text


def test_segment_returns_masks_overlays_records_and_views(client):
    answer = post(client, png_bytes(sample_image()), ("bright square", "absent thing"),
                  views="true")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["width"], body["height"]) == (60, 40)
    bright, absent = body["results"]
    mask = decode_png(bright["mask"])
    assert np.array_equal(mask == 255, sample_image() > sample_image().mean())
    assert decode_png(bright["overlay_png"]).shape == (40, 60, 3)
    assert bright["found"] and bright["record"]["boxes"] == [[20, 10, 45, 25]]
    assert not absent["found"] and not decode_png(absent["mask"]).any()
    assert decode_png(bright["views"]["saliency"]).shape == (40, 60, 3)
    plain = post(client, png_bytes(sample_image()), method="salip").json()
    assert "views" not in plain["results"][0]
    assert plain["results"][0]["record"]["method"] == "fake"


def test_nifti_volume_answer_is_a_nifti_mask(client, tmp_path):
    volume = np.stack([sample_image(), np.zeros((40, 60), np.uint8)]).astype(np.float32)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.transpose(volume, (2, 1, 0)), np.eye(4)), path)
    answer = post(client, path.read_bytes(), name="vol.nii.gz")
    assert answer.status_code == 200, answer.text
    result = answer.json()["results"][0]
    assert result["mask_format"] == "nifti"
    raw = gzip.decompress(base64.b64decode(result["mask"]))
    mask = nib.Nifti1Image.from_bytes(raw)
    assert mask.shape == (60, 40, 2) and np.asarray(mask.dataobj)[..., 0].sum() == 15 * 25


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        ({"data": b"\x89PNG" + bytes(60_000)}, 413, "limit"),
        ({"data": "big"}, 413, "largest side"),
        ({"prompts": ("x" * 41,)}, 400, "prompt too long"),
        ({"prompts": ("a", "b", "c")}, 400, "at most 2"),
        ({"prompts": ("   ",)}, 400, "no prompt"),
        ({"data": b""}, 400, "empty"),
        ({"data": b"this is not an image"}, 400, "cannot read"),
        ({"method": "magic"}, 400, "unknown method"),
        ({"prompts": ("slow bright",)}, 408, "time limit"),
    ],
)
def test_each_limit_gives_one_line_4xx_and_server_keeps_serving(client, kwargs, status, words):
    data = kwargs.pop("data", png_bytes(sample_image()))
    if data == "big":
        data = png_bytes(np.zeros((20, 150), np.uint8))
    fields = {"method": kwargs["method"]} if "method" in kwargs else {}
    answer = post(client, data, kwargs.get("prompts", ("bright",)), **fields)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert words in error and "\n" not in error and "upload." not in error
    time.sleep(1.2 if status == 408 else 0)
    assert post(client, png_bytes(sample_image())).status_code == 200


def test_a_timed_out_request_stops_and_the_next_one_is_served_promptly():
    client = make_client(ServerLimits(request_seconds=1.0), pipeline=StagedPipeline)
    assert post(client, png_bytes(sample_image())).status_code == 200  # models and imports
    answer = post(client, png_bytes(sample_image()), ("stages bright",))
    assert answer.status_code == 408 and "time limit" in answer.json()["error"]
    start = time.perf_counter()
    assert post(client, png_bytes(sample_image())).status_code == 200
    assert time.perf_counter() - start < 0.8  # not queued behind ~2 s of remaining stages
    stopped_at = StagedPipeline.started
    time.sleep(0.3)
    assert 10 <= stopped_at == StagedPipeline.started < 60


def test_missing_fields_and_oversized_body_header(client):
    answer = client.post("/segment", data={"prompt": "bright"})
    assert answer.status_code == 422 and "image" in answer.json()["error"]
    answer = client.post("/segment", content=b"x" * 200_000,
                         headers={"content-type": "multipart/form-data; boundary=z"})
    assert answer.status_code == 413
    assert client.get("/health").status_code == 200


def test_views_show_maps_and_proposals_at_image_size():
    class Proposals:
        masks = np.zeros((3, 40, 60), bool)

    Proposals.masks[0, :10], Proposals.masks[2, 20:] = True, True
    views = {"saliency": np.random.default_rng(0).random((14, 14)),
             "boxes": np.array([[1, 2, 30, 20], [5, 5, 9, 9]], np.float32),
             "proposal_scores": np.ones(3), "proposals": Proposals(), "chosen": np.array([2])}
    pictures = {k: decode_png(v) for k, v in view_pictures(views, (40, 60)).items()}
    assert set(pictures) == {"saliency", "proposals", "chosen proposals"}
    assert all(p.shape == (40, 60, 3) for p in pictures.values())
    chosen = pictures["chosen proposals"].any(axis=2)
    assert chosen[20:].all() and not chosen[:20].any()
    assert pictures["proposals"].any(axis=2)[:10].all()


def test_missing_weights_is_a_server_side_503_and_serving_continues():
    from clipsam.errors import WeightsError

    def segmenter_for(method: str, presence: str) -> Segmenter:
        if method == "salip":
            raise WeightsError("weights for sam-vit-b not found")
        return Segmenter(RunConfig(method=method), pipeline=FakePipeline(), encoder=FakeEncoder())

    client = TestClient(create_app(segmenter_for, ServerLimits()))
    answer = post(client, png_bytes(sample_image()), method="salip")
    assert answer.status_code == 503 and "sam-vit-b" in answer.json()["error"]
    assert post(client, png_bytes(sample_image())).status_code == 200


def box_client(cache_images: int) -> tuple[TestClient, BoxFillingSegmenter]:
    """A server whose stand-in segmenter fills each box it is given, counting its encodes."""
    encoder = BoxFillingSegmenter()
    segmenter = Segmenter(RunConfig(keep_intermediates=True), pipeline=FakePipeline(),
                          encoder=encoder, cache_images=cache_images)
    app = create_app(lambda method, presence: segmenter, ServerLimits(max_boxes=3))
    return TestClient(app), encoder


def test_boxes_are_decoded_from_the_cached_embedding_without_encoding_again():
    client, encoder = box_client(cache_images=2)
    image = png_bytes(sample_image())
    first = post(client, image, views="true").json()
    assert encoder.encoded == 1
    shown = decode_png(first["image_png"])  # the plain image, stretched as the overlay is
    assert shown.shape == (40, 60, 3) and np.array_equal(shown[..., 0] == 255, sample_image() > 0)
    boxes = [[5, 5, 15, 30], [40.5, 20, 70, 50]]  # the second runs off the 60x40 image
    answer = post(client, image, views="true", boxes=json.dumps(boxes))
    assert answer.status_code == 200, answer.text
    assert encoder.encoded == 1  # the embedding of the first request was reused
    (result,) = answer.json()["results"]
    expected = np.zeros((40, 60), bool)
    expected[5:30, 5:15] = expected[20:40, 40:60] = True
    assert np.array_equal(decode_png(result["mask"]) == 255, expected)
    assert result["record"]["boxes"] == [[5, 5, 15, 30], [40.5, 20, 60, 40]]
    assert result["record"]["method"] == "boxes" and result["prompt"] == "bright square"
    assert result["record"]["provenance"]["timings"]["encode"] == 0
    assert decode_png(result["overlay_png"]).shape == (40, 60, 3)

    for shift in (1, 2):  # two other images push the first out of the 2-image cache
        post(client, png_bytes(np.roll(sample_image(), shift, axis=0)))
    assert encoder.encoded == 3
    post(client, png_bytes(np.roll(sample_image(), 2, axis=0)), boxes="[[1, 1, 9, 9]]")
    assert encoder.encoded == 3
    post(client, image, boxes="[[1, 1, 9, 9]]")
    assert encoder.encoded == 4


@pytest.mark.parametrize(("boxes", "fields", "words"), [
    ("[[1, 2, 3", {}, "boxes must be JSON"),
    ("[[1, 2, 3]]", {}, "boxes must be a list of [x1, y1, x2, y2]"),
    ("[[30, 10, 20, 20]]", {}, "is empty or outside the 60x40 image"),
    ("[[70, 10, 90, 20]]", {}, "is empty or outside"),
    (json.dumps([[0, 0, 5, 5]] * 4), {}, "at most 3"),
    ("[[0, 0, 5, 5]]", {"prompts": ("a", "b")}, "one prompt's mask; 2 prompts"),
    ("[[0, 0, 5, 5]]", {"name": "vol.nii.gz"}, "boxes apply to a 2-D image"),
])
def test_bad_boxes_are_one_line_400(tmp_path, boxes, fields, words):
    client, _ = box_client(cache_images=1)
    data = png_bytes(sample_image())
    if fields.get("name") == "vol.nii.gz":
        path = tmp_path / "vol.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((60, 40, 2), np.float32), np.eye(4)), path)
        data = path.read_bytes()
    answer = post(client, data, fields.get("prompts", ("bright",)),
                  name=fields.get("name", "scan.png"), boxes=boxes)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert words in error and "\n" not in error


def word_client() -> tuple[TestClient, object]:
    """The app over the tiny grounding model of word_fakes (breast tumour and lungs present on
    every image, brain tumour never), through the library's MedCLIP-SAM pipeline."""
    from word_fakes import FeatureSegmenter, word_model, word_segmenter

    encoder = FeatureSegmenter()
    model = word_model({"breast tumour": 0.0, "lungs": 0.0, "brain tumour": 1.0})
    segmenter = word_segmenter(RunConfig(keep_intermediates=True), model, encoder)
    app = create_app(lambda method, presence: segmenter, ServerLimits())
    return TestClient(app), encoder


def test_all_concepts_answers_what_is_in_the_image_from_one_encoder_pass():
    client, encoder = word_client()
    image = png_bytes(sample_image(64, 64))
    answer = post(client, image, prompts=(), all_concepts="true")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["all_concepts"] == ["brain tumour", "breast tumour", "lungs"]
    found = {r["prompt"]: r for r in body["results"]}
    assert set(found) == {"breast tumour", "lungs"} and encoder.encoded == 1
    for result in found.values():
        assert result["found"] and decode_png(result["mask"]).any()
        assert result["record"]["decisions"]["presence"] > 0
        assert result["concept_note"] is None
    for fields, words in (({"prompts": ("lungs",)}, "without prompts"),
                          ({"boxes": "[[1, 1, 9, 9]]"}, "without prompts or boxes")):
        refused = post(client, image, prompts=fields.get("prompts", ()), all_concepts="true",
                       **{k: v for k, v in fields.items() if k != "prompts"})
        assert refused.status_code == 400 and words in refused.json()["error"]


def test_an_answer_names_the_concept_reached_or_notes_an_untrained_target():
    client, _ = word_client()
    answer = post(client, png_bytes(sample_image(64, 64)), ("tumours", "liver"))
    assert answer.status_code == 200, answer.text
    tumours, liver = answer.json()["results"]
    assert tumours["record"]["decisions"]["concept"] == "breast tumour"
    assert len(tumours["record"]["decisions"]["concept_candidates"]) == 2
    assert tumours["concept_note"] is None
    assert liver["record"]["decisions"]["concept"] is None
    assert liver["concept_note"] == ("'liver' is not a trained target; nearest: lungs (0.45); "
                                     "teach it with clipsam adapt")


def test_all_concepts_with_a_model_without_concepts_is_a_one_line_400(client):
    answer = post(client, png_bytes(sample_image()), prompts=(), all_concepts="true")
    assert answer.status_code == 400 and "no text model with trained concepts" in (
        answer.json()["error"])


def test_the_presence_operating_point_is_a_form_field():
    from word_fakes import FeatureSegmenter, word_model, word_segmenter

    thresholds = dict.fromkeys(("breast tumour", "lungs", "brain tumour"), 0.0)
    model = word_model(thresholds, points={name: {"balanced": 0.0, "precision": 1.0}
                                           for name in thresholds})
    encoder, built = FeatureSegmenter(), {}

    def segmenter_for(method: str, presence: str) -> Segmenter:
        config = RunConfig(keep_intermediates=True, presence=presence)
        return built.setdefault(presence, word_segmenter(config, model, encoder))

    client = TestClient(create_app(segmenter_for, ServerLimits()))
    image = png_bytes(sample_image(64, 64))
    for presence, found in (("recall", True), ("precision", False)):
        answer = post(client, image, ("lungs",), presence=presence)
        assert answer.status_code == 200, answer.text
        result = answer.json()["results"][0]
        assert result["found"] == found
        assert result["record"]["decisions"]["presence_point"] == presence
    assert post(client, image, ("lungs",)).json()["results"][0]["record"]["decisions"][
        "presence_point"] == "recall"  # the default
    refused = post(client, image, ("lungs",), presence="strict")
    assert refused.status_code == 400 and "unknown presence operating point" in (
        refused.json()["error"])
