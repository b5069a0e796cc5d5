"""`dlops serve RUN`: the run's exported ONNX model behind FastAPI, run by onnxruntime.

No torch here or in anything imported from here (the serving process starts fast and small;
a test checks the process's memory map). Images are converted as training read them
(dlops.serve.images), so an upload gets the probabilities `dlops predict` gives for the file.
"""

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np

from dlops.errors import ConfigError
from dlops.rundir import layout
from dlops.serve.images import ImageError, decode_image

MAX_UPLOAD_BYTES = 4 * 1024 * 1024  # a 28x28 PNG is < 1 KB, its JSON pixels ~4 KB


def read_export(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """RUN/export/ and its model.json, or ConfigError saying what is missing."""
    run = Path(run_dir)
    if not (run / layout.HYDRA_CONFIG).is_file():
        raise ConfigError(f"{run_dir} is not a dlops run directory (no .hydra/config.yaml); give a run "
                          "directory such as outputs/<date>/<time>.")
    export = run / layout.EXPORT
    if not ((run / layout.EXPORT_MODEL).is_file() and (run / layout.EXPORT_INFO).is_file()):
        raise ConfigError(f"{run_dir} has not been exported yet (no export/model.onnx + model.json); "
                          f"run: dlops export {run_dir}")
    info = json.loads((run / layout.EXPORT_INFO).read_text())
    if "class_names" not in info:
        raise ConfigError(f"{run_dir}'s export is not an image classifier (model.json has no "
                          "class_names); dlops serve serves image classifiers only.")
    return export, info


class BodyLimit:
    """ASGI middleware: answer 413 to a request body over `limit` bytes, before the app reads it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            return await self._too_large(send)
        # a chunked body has no length: read it (up to the limit) before the app sees it
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                return await self._too_large(send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> dict:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any) -> None:
        body = json.dumps({"detail": f"request body over the upload limit of {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def pixels_from_json(body: Any, shape: list[int]) -> np.ndarray:
    """`{"pixels": [[...]]}` as float32 `(C, H, W)`; ValueError with the reason if it is not that."""
    if not isinstance(body, dict) or "pixels" not in body:
        raise ValueError('the JSON body must be an object {"pixels": [[...], ...]}')
    try:
        pixels = np.asarray(body["pixels"], dtype=np.float32)
    except (ValueError, TypeError):
        raise ValueError("pixels must be a rectangular nested list of numbers") from None
    if pixels.ndim == 2 and shape[0] == 1:
        pixels = pixels[None]
    if list(pixels.shape) != list(shape):
        expected = f"{shape[1:]} or {shape}" if shape[0] == 1 else f"{shape}"
        raise ValueError(f"pixels has shape {list(pixels.shape)}; the model takes {expected} "
                         "(channels, height, width)")
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("pixels must be raw pixel values from 0 to 255")
    return pixels


def create_app(run_dir: str | Path, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> Any:
    """The FastAPI app serving RUN/export/model.onnx."""
    import onnxruntime
    from fastapi import FastAPI, HTTPException, Request

    export, info = read_export(run_dir)
    session = onnxruntime.InferenceSession(str(Path(run_dir) / layout.EXPORT_MODEL),
                                           providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    shape = [int(d) for d in info["input"]["shape"][1:]]
    names = list(info["class_names"])
    app = FastAPI(title="dlops model", version=str(info.get("versions", {}).get("dlops", "")),
                  description=f"Class probabilities from the ONNX export of {Path(run_dir).resolve()}.")
    app.add_middleware(BodyLimit, limit=max_upload_bytes)

    def answer(pixels: np.ndarray) -> dict[str, Any]:
        probs = session.run(None, {input_name: pixels[None].astype(np.float32)})[0][0]
        return {"label": names[int(probs.argmax())],
                "probabilities": {name: float(p) for name, p in zip(names, probs, strict=True)}}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return info

    body_doc = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "a PNG or JPEG image"}}}},
        "application/json": {"schema": {"type": "object", "required": ["pixels"], "properties": {
            "pixels": {"type": "array", "description": f"raw 0-255 pixels of shape {shape}"}}}}}}}

    @app.post("/predict", openapi_extra=body_doc)
    async def predict(request: Request) -> dict[str, Any]:
        """An image upload (multipart field `file`) or JSON `{"pixels": ...}` -> label and probabilities."""
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise HTTPException(422, "the multipart body has no file field named 'file'")
            try:
                pixels = decode_image(await upload.read(), shape)
            except ImageError as exc:
                raise HTTPException(422, f"file {upload.filename!r}: {exc}") from None
            return answer(pixels)
        if kind.startswith("application/json"):
            try:
                return answer(pixels_from_json(json.loads(await request.body()), shape))
            except ValueError as exc:  # json.JSONDecodeError is a ValueError too
                raise HTTPException(422, str(exc)) from None
        raise HTTPException(415, "send multipart/form-data with a field 'file', or application/json "
                                 '{"pixels": [[...]]}')

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or ConfigError if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    # accepted connections inherit it: without, a keep-alive client waited ~45 ms a request for the
    # delayed ACK that lets the response body out after its headers (~6 ms a request with it)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}. Stop what uses it or "
                          "choose another --port.") from None
    sock.listen(128)
    return sock


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
          max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
    """Serve the run's export with uvicorn until stopped (Ctrl-C)."""
    import uvicorn

    read_export(run_dir)  # a run not exported yet says so before the port is taken
    sock = bind(host, port)
    try:
        app = create_app(run_dir, max_upload_bytes)
    except BaseException:
        sock.close()
        raise
    print(f"serving {Path(run_dir)} on http://{host}:{sock.getsockname()[1]} (API docs: /docs)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
