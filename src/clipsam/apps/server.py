"""The clipsam web server: a page to try segmentation and a JSON API on the same port.

``GET /`` is the page, ``GET /health`` says the server is up and lists its methods and "not
found" operating points (the page builds its menus from those lists), ``POST /segment`` takes a
multipart form (file ``image``, one or more ``prompt`` fields, optional ``method``,
``presence`` (the "not found" operating point: ``recall``, ``balanced`` or ``precision``) and
``views``) and returns each prompt's mask as base64 (PNG for 2-D images, NIfTI for volumes), an
overlay, the record (with the trained concept the prompt reached) and, for a prompt that
reached none, a one-line ``concept_note``. ``all_concepts=true`` instead of prompts answers
"what is in this image?": every trained and adapted concept is looked for (one encoder pass)
and those found are returned, most present first. With ``boxes`` (JSON ``[[x1, y1, x2, y2],
...]`` in image pixels, far corner exclusive) and one prompt, the request skips the method and
decodes those boxes instead (the page's box correction), from the embedding the server cached
for that image: no second encoder pass. Every limit in :class:`ServerLimits` answers with a 4xx
status and a one-line ``{"error": ...}`` (missing model weights, a server-side problem, give
503); the server keeps serving. A request over the time limit also stops its work at the next
stage boundary (:func:`clipsam.pipelines.timing.checkpoint`), so the requests after it are not
queued behind it.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.exceptions import HTTPException

from clipsam.api import Segmenter, SegmentResult
from clipsam.apps.batch import is_nifti, overlay_plane
from clipsam.config import PRESENCE_POINTS, ModelConfig, RunConfig
from clipsam.errors import ClipsamError, WeightsError
from clipsam.pipelines.registry import SERVED_METHODS
from clipsam.pipelines.timing import checkpoint, stoppable

UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom", ".nii", ".nii.gz")


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for."""

    max_upload_bytes: int = 64 * 1024 * 1024
    max_side: int = 4096
    max_slices: int = 512
    max_prompts: int = 8
    max_prompt_chars: int = 300
    max_boxes: int = 32
    request_seconds: float = 300.0


class ServerError(Exception):
    """A request the server refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class SegmenterPool:
    """Loads the models once and builds one :class:`Segmenter` per method and "not found"
    operating point on first use.

    ``with_text=False`` loads no text model (only text-free methods such as ``unprompted`` work).
    Each segmenter keeps the embeddings of its last ``cache_images`` images, for box corrections.
    """

    def __init__(self, models: ModelConfig, with_text: bool = True,
                 cache_images: int = 4) -> None:
        self.model_config = models
        self.with_text = with_text
        self.cache_images = cache_images
        self._models: Any = None
        self._segmenters: dict[str, Segmenter] = {}
        self._lock = threading.Lock()

    def __call__(self, method: str, presence: str = "recall") -> Segmenter:
        with self._lock:
            key = (method, presence)
            if key not in self._segmenters:
                from clipsam.pipelines.registry import build_pipeline, load_models

                if self._models is None:
                    self._models = load_models(self.model_config, with_text=self.with_text)
                config = RunConfig(method=method, models=self.model_config,
                                   keep_intermediates=True, presence=presence)
                self._segmenters[key] = Segmenter(
                    config, pipeline=build_pipeline(config, self._models),
                    encoder=self._models.segmenter, text=self._models.text,
                    cache_images=self.cache_images)
            return self._segmenters[key]


def png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def view_pictures(intermediates: dict[str, Any], size: tuple[int, int]) -> dict[str, str]:
    """Base64 PNGs of :func:`clipsam.io.views.render_views`."""
    from clipsam.io.views import render_views

    return {name: png_base64(picture)
            for name, picture in render_views(intermediates, size).items()}


def describe(result: SegmentResult, image: Any, workdir: Path, views: bool) -> dict[str, Any]:
    """One prompt's answer: mask and overlay as base64, the record, optional views."""
    from clipsam.io import write_mask_nifti, write_mask_png, write_overlay_png

    volume = result.mask.ndim == 3 or is_nifti(Path(image.path or ""))
    mask_path = workdir / ("mask.nii.gz" if volume else "mask.png")
    if volume:
        write_mask_nifti(mask_path, result.mask, image)
    else:
        write_mask_png(mask_path, result.mask)
    plane, mask, boxes = overlay_plane(image, result)
    overlay_path = write_overlay_png(workdir / "overlay.png", plane, mask, boxes)
    answer = {
        "prompt": result.prompt,
        "found": result.found,
        "mask_format": "nifti" if volume else "png",
        "mask": base64.b64encode(mask_path.read_bytes()).decode("ascii"),
        "overlay_png": base64.b64encode(overlay_path.read_bytes()).decode("ascii"),
        "record": result.to_record(),
        "concept_note": result.concept_note,
    }
    if views:
        answer["views"] = view_pictures(result.intermediates, mask.shape)
    return answer


def check_upload(name: str, data: bytes, limits: ServerLimits) -> str:
    """The upload's suffix (which tells the reader its format); refuse empty or huge files."""
    if len(data) > limits.max_upload_bytes:
        raise ServerError(413, f"upload is {len(data)} bytes; the limit is "
                               f"{limits.max_upload_bytes}")
    if not data:
        raise ServerError(400, "the uploaded image is empty")
    lower = name.lower()
    for suffix in sorted(UPLOAD_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return suffix
    return ""


def check_prompts(prompts: Sequence[str], limits: ServerLimits) -> list[str]:
    prompts = [" ".join(p.split()) for p in prompts if p and p.strip()]
    if not prompts:
        raise ServerError(400, "no prompt: say what to segment, e.g. 'fetal head'")
    if len(prompts) > limits.max_prompts:
        raise ServerError(400, f"{len(prompts)} prompts; at most {limits.max_prompts} per request")
    for prompt in prompts:
        if len(prompt) > limits.max_prompt_chars:
            raise ServerError(400, f"prompt too long: {len(prompt)} characters (at most "
                                   f"{limits.max_prompt_chars})")
    return prompts


def parse_boxes(text: str | None, prompts: Sequence[str], limits: ServerLimits) -> list | None:
    """The ``boxes`` form field as a list (None when absent); its numbers are checked against
    the image later (:func:`clipsam.postprocess.boxes.check_boxes`)."""
    if text is None:
        return None
    try:
        boxes = json.loads(text)
    except ValueError:
        boxes = None
    if not isinstance(boxes, list):
        raise ServerError(400, "boxes must be JSON: [[x1, y1, x2, y2], ...] in image pixels")
    if len(boxes) > limits.max_boxes:
        raise ServerError(400, f"{len(boxes)} boxes; at most {limits.max_boxes} per request")
    if len(prompts) != 1:
        raise ServerError(400, f"boxes correct one prompt's mask; {len(prompts)} prompts were "
                               "sent with them")
    return boxes


def check_dimensions(image: Any, limits: ServerLimits) -> None:
    height, width = image.size
    if max(height, width) > limits.max_side:
        raise ServerError(413, f"image is {width}x{height} pixels; the largest side allowed is "
                               f"{limits.max_side}")
    if image.num_slices > limits.max_slices:
        raise ServerError(413, f"volume has {image.num_slices} slices; at most "
                               f"{limits.max_slices} allowed")


def create_app(
    segmenter_for: Callable[[str, str], Segmenter],
    limits: ServerLimits = ServerLimits(),
    methods: Sequence[str] = SERVED_METHODS,
) -> FastAPI:
    """The web app; ``segmenter_for(method, presence)`` returns the (loaded, reused) segmenter
    to use."""
    app = FastAPI(title="clipsam", docs_url=None, redoc_url=None, openapi_url=None)
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                   thread_name_prefix="clipsam-segment")
    page = resources.files("clipsam.apps").joinpath("web/index.html").read_text("utf-8")

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limits.max_upload_bytes + 64 * 1024:
            return _error(413, f"request is {length} bytes; uploads are limited to "
                               f"{limits.max_upload_bytes}")
        return await call_next(request)

    @app.exception_handler(ServerError)
    async def server_error(_request: Request, exc: ServerError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def form_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = sorted({str(e.get("loc", ["", "?"])[-1]) for e in exc.errors()})
        return _error(422, f"missing or invalid form field(s): {', '.join(fields)}")

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict[str, Any]:
        from clipsam.io.record import software_versions

        return {"status": "ok", "methods": list(methods),
                "presence_points": list(PRESENCE_POINTS),
                "version": software_versions().get("clipsam")}

    @app.post("/segment")
    def segment(
        image: Annotated[UploadFile, File()],
        prompt: Annotated[list[str] | None, Form()] = None,
        method: Annotated[str, Form()] = methods[0],
        views: Annotated[bool, Form()] = False,
        boxes: Annotated[str | None, Form()] = None,
        all_concepts: Annotated[bool, Form()] = False,
        presence: Annotated[str, Form()] = "recall",
    ) -> dict[str, Any]:
        if method not in methods:
            raise ServerError(400, f"unknown method {method!r}: use one of {', '.join(methods)}")
        if presence not in PRESENCE_POINTS:
            raise ServerError(400, f"unknown presence operating point {presence!r}: use one of "
                                   f"{', '.join(PRESENCE_POINTS)}")
        if all_concepts:
            if any(p.strip() for p in prompt or ()) or boxes is not None:
                raise ServerError(400, "all_concepts looks for every trained target: send it "
                                       "without prompts or boxes")
            prompts: list[str] = []
        else:
            prompts = check_prompts(prompt or [], limits)
        given_boxes = parse_boxes(boxes, prompts, limits)
        data = image.file.read(limits.max_upload_bytes + 1)
        suffix = check_upload(image.filename or "", data, limits)
        stop = threading.Event()
        future = worker.submit(_until_stopped, stop, _segment_upload, segmenter_for, method,
                               presence, prompts, data, suffix, limits, views, given_boxes)
        try:
            return future.result(timeout=limits.request_seconds)
        except concurrent.futures.TimeoutError:
            stop.set()
            raise ServerError(408, f"segmentation took longer than {limits.request_seconds:g} s"
                                   " (the server's request time limit)") from None

    return app


def _until_stopped(stop: threading.Event, work: Callable[..., Any], *args: Any) -> Any:
    """Run ``work`` so that setting ``stop`` ends it at its next stage boundary (a request
    that timed out while queued does not start at all), freeing the worker for the next."""
    with stoppable(stop):
        checkpoint()
        return work(*args)


def _segment_upload(segmenter_for: Callable[[str, str], Segmenter], method: str,
                    presence: str, prompts: list[str], data: bytes, suffix: str,
                    limits: ServerLimits,
                    views: bool, boxes: list | None) -> dict[str, Any]:
    from clipsam.io import read_image, segmenter_input
    from clipsam.io.overlay import to_display

    with tempfile.TemporaryDirectory(prefix="clipsam-serve-") as folder:
        workdir = Path(folder)
        upload = workdir / f"upload{suffix}"
        upload.write_bytes(data)
        try:
            image = read_image(upload, max_pixels=limits.max_side ** 2 * limits.max_slices)
            check_dimensions(image, limits)
            segmenter = segmenter_for(method, presence)
            if not prompts:
                results = segmenter.segment_all(image)
            elif boxes is None:
                results = segmenter.segment(image, prompts)
            else:
                results = [segmenter.segment_boxes(image, boxes, prompts[0])]
            height, width = image.size
            answers = []
            for index, result in enumerate(results):
                part = workdir / f"result{index}"
                part.mkdir()
                answers.append(describe(result, image, part, views))
            picture = (png_base64(to_display(segmenter_input(image)))
                       if views and not image.is_volume else None)
        except WeightsError as exc:
            raise ServerError(503, f"the server's models are not available: {exc}") from None
        except ClipsamError as exc:
            message = str(exc).replace(str(upload), "the upload")
            status = 413 if "exceed the limit" in message else 400
            raise ServerError(status, message) from None
    answer = {"method": method, "width": width, "height": height,
              "slices": image.num_slices, "results": answers}
    if not prompts:
        answer["all_concepts"] = segmenter.concepts()
    if picture is not None:
        answer["image_png"] = picture  # what the page draws the boxes on
    return answer


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)

