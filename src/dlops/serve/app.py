"""The HTTP app of `dlops serve`: FastAPI routes behind a guard that keeps every answer a JSON one.

No torch here or in anything imported from here (the serving process starts fast and small;
a test checks the process's memory map). The event loop only moves bytes: parsing, decoding and
the model run in a worker thread (dlops.serve.batching, dlops.serve.answer).
"""

import json
import logging
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from dlops import __version__
from dlops.serve.answer import Job, answer_batch
from dlops.serve.batching import Batcher
from dlops.serve.model import ServedModel

log = logging.getLogger("uvicorn.error")  # configured by uvicorn: one line a problem, no tracebacks


@dataclass
class Limits:
    """What one server allows (README "Serving"); the command line's checked values."""

    max_upload_bytes: int = 4 * 1024 * 1024  # a 28x28 PNG is < 1 KB, its JSON pixels ~4 KB
    max_pixels: int | None = None  # an uploaded image's width x height, from its header (None: pixel_cap)
    max_concurrency: int = 64  # requests in progress; more are answered 503
    timeout_s: float = 10.0  # for a request's head and body to arrive
    workers: int = 1  # processes, each with its event loop and a thread that decodes and runs the model
    batch_wait_ms: float = 0.0  # how long a request waits for companions to batch with


def pixel_cap(model: ServedModel) -> int:
    """The default pixel cap: 256 times the model's input, from 1 to 16 megapixels (Pillow's own
    decompression-bomb limit is 89 million: a 13000x13000 PNG of 20 KB took 2.3 s and 330 MB)."""
    height, width = model.decoder["size"] if model.decoder else (1, 1)
    return min(max(256 * height * width, 1 << 20), 1 << 24)


def metadata(model: ServedModel, limits: Limits) -> dict[str, Any]:
    """GET /metadata: what the model takes and gives, and the server's limits (no paths)."""
    shown = ("format", "file", "opset", "model", "input", "output", "class_names", "decoder", "verification",
             "versions")  # what dlops writes; anything else in model.json is not repeated
    info = {key: model.info[key] for key in shown if key in model.info}
    checkpoint = model.info.get("source_checkpoint")
    if isinstance(checkpoint, dict):  # its name and digest; a path outside the run would be absolute
        info["source_checkpoint"] = {"file": Path(str(checkpoint.get("path", ""))).name,
                                     "sha256": checkpoint.get("sha256")}
    accepts: dict[str, Any] = {"json": {"body": '{"inputs": [row, ...]}', "row_shape": list(model.row_shape),
                                        "dtype": str(model.dtype)}}
    if model.value_range:
        accepts["json"]["range"] = list(model.value_range)
    if model.decoder:
        accepts["image"] = {"multipart_field": "file", "or_body_of_type": "image/png, image/jpeg, ...",
                            "formats": model.decoder["formats"], "max_pixels": limits.max_pixels}
    answers = {"json": '{"outputs": [...]} one entry per row'}
    if model.class_names:
        answers["json"] = ('{"outputs": [...], "labels": [...], "probabilities": [{class: p}, ...]} '
                           "one entry per row")
        answers["image"] = '{"label": class, "probabilities": {class: p}}'
    limit_names = ("max_upload_bytes", "max_pixels", "max_concurrency", "timeout_s")
    return {**info, "accepts": accepts, "answers": answers,
            "limits": {name: getattr(limits, name) for name in limit_names}}


async def respond(send: Any, status: int, detail: str, headers: tuple = ()) -> None:
    """A JSON `{"detail": ...}` answer that closes the connection (its body may not have been read)."""
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI wrapper: the whole body read (up to the upload limit, else 413) before anything runs,
    at most `max_concurrency` requests in progress (503 beyond, /health exempt), POST /predict
    answered by `predict` (FastAPI's routing and request objects cost ~0.7 ms a request), the rest
    by FastAPI; and no exception out: one log line and a JSON 500 instead of a traceback."""

    def __init__(self, app: Any, predict: Any, limits: Limits) -> None:
        self.app, self.predict, self.limits, self.in_flight = app, predict, limits, 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        counted = scope["path"] != "/health"
        if counted and self.in_flight >= self.limits.max_concurrency:
            return await respond(send, 503, f"{self.in_flight} requests in progress, the limit; try again",
                                 ((b"retry-after", b"1"),))
        self.in_flight += counted
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            body = await self.read_body(scope, receive, send)
            if body is None:
                return  # answered already, or the client left
            if scope["path"] == "/predict" and scope["method"] != "POST":
                return await respond(send, 405, "Method Not Allowed: POST /predict", ((b"allow", b"POST"),))
            if scope["path"] == "/predict":
                content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
                status, answer = await self.predict(content_type, body)
                await tracked({"type": "http.response.start", "status": status, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
                return await send({"type": "http.response.body", "body": answer})
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def replay() -> dict:
                return messages.pop() if messages else await receive()

            await self.app(scope, replay, tracked)
        except Exception as exc:
            log.error("%s %s failed: %s: %s", scope["method"], scope["path"], type(exc).__name__,
                      " ".join(str(exc).split())[:300])
            if not started:
                await respond(send, 500, "the server failed on this request; its log says why")
        finally:
            self.in_flight -= counted

    async def read_body(self, scope: dict, receive: Any, send: Any) -> bytes | None:
        limit = self.limits.max_upload_bytes
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await respond(send, 413 if length.isdigit() else 400,
                          f"request body over the upload limit of {limit} bytes" if length.isdigit()
                          else "content-length is not a number")
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:  # a chunked body has no length: counted as it comes
                await respond(send, 413, f"request body over the upload limit of {limit} bytes")
                return None
            if not message.get("more_body"):
                return b"".join(chunks)


PREDICT_DOC = {"post": {
    "summary": "Predict", "description": 'JSON `{"inputs": [row, ...]}` -> `{"outputs": [...]}`, one entry '
    "a row (classifiers: also `labels` and `probabilities`); an image (image classifiers: multipart "
    "field `file`, or the body as image/png, image/jpeg) -> its `label` and `probabilities`.",
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
            "inputs": {"type": "array", "description": "a batch of rows in the model's input shape "
                                                       "(GET /metadata: accepts.json.row_shape)"}}}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "an image"}}}},
        "image/png": {"schema": {"type": "string", "format": "binary"}}}},
    "responses": {"200": {"description": "the answer"}, "413": {"description": "body or image too large"},
                  "415": {"description": "a content type this model does not take"},
                  "422": {"description": "inputs or image the model cannot take; `detail` says why"},
                  "503": {"description": "too many requests in progress"}}}}


def predictor(model: ServedModel, batcher: Batcher) -> Any:
    """POST /predict: (content type, body) -> (status, JSON answer)."""
    async def predict(content_type: str, body: bytes) -> tuple[int, bytes]:
        media = content_type.split(";")[0].strip().lower()
        kind = {"application/json": "json", "multipart/form-data": "multipart"}.get(
            media, "image" if media.startswith("image/") else "")
        if not kind or (kind != "json" and model.decoder is None):
            detail = 'send application/json {"inputs": [row, ...]}' + (
                ", or an image as the multipart/form-data field 'file' or as an image/... body"
                if model.decoder else "; this model takes no images")
            return 415, json.dumps({"detail": detail}).encode()
        return await batcher.submit(Job(kind, body, content_type))

    return predict


def create_app(model: ServedModel, limits: Limits) -> tuple[Any, Batcher]:
    """The ASGI app serving `model`, and its worker pool (to close when the server stops)."""
    from fastapi import FastAPI, Request
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import JSONResponse

    if limits.max_pixels is None:
        limits = replace(limits, max_pixels=pixel_cap(model))
    work = partial(answer_batch, model, max_pixels=limits.max_pixels)
    batcher = Batcher(work, 1, limits.batch_wait_ms / 1000)
    described = metadata(model, limits)
    app = FastAPI(title=f"dlops: {model.info.get('model', 'model')}", redoc_url=None,
                  version=__version__,
                  description="Predictions of a dlops run's ONNX export (GET /metadata says what it takes).")

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": "the server failed on this request; its log says why"}, 500)

    @app.get("/health")
    async def health() -> dict[str, str]:  # async: FastAPI runs plain functions in a thread (~1 ms)
        return {"status": "ok"}

    @app.get("/metadata")
    async def get_metadata() -> dict[str, Any]:
        return described

    def openapi() -> dict[str, Any]:  # POST /predict is the guard's: described here
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema["paths"]["/predict"] = PREDICT_DOC
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return Guard(app, predictor(model, batcher), limits), batcher
