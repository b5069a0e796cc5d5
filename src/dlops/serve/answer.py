"""Request bodies to answers, in the worker pool (never on the event loop): JSON rows or an
uploaded image are parsed and checked, the model runs once on all the requests that arrived
together, and each gets its answer as JSON bytes."""

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlops.serve.images import ImageError, TooManyPixels, decode_image
from dlops.serve.model import ServedModel


class BadRequest(ValueError):
    """A request the model cannot answer: the HTTP status and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class Job:
    """One /predict request: `json` rows, or an `image` sent as a `multipart` field or as the body."""

    kind: str
    body: bytes
    content_type: str = ""


def answer_batch(model: ServedModel, jobs: list[Job], max_pixels: int) -> list[tuple[int, bytes]]:
    """(HTTP status, JSON body) for each job; the model runs once on the rows of all good ones."""
    answers: list[tuple[int, bytes] | None] = [None] * len(jobs)
    ready: list[tuple[int, np.ndarray]] = []
    for index, job in enumerate(jobs):
        try:
            ready.append((index, rows_of(job, model, max_pixels)))
        except BadRequest as exc:
            answers[index] = (exc.status, json.dumps({"detail": str(exc)}).encode())
    if ready:
        rows = ready[0][1] if len(ready) == 1 else np.concatenate([r for _, r in ready])
        outputs, start = model.run(rows), 0
        for index, part in ready:
            answers[index] = (200, encode(model, jobs[index], outputs[start:start + len(part)]))
            start += len(part)
    return answers  # type: ignore[return-value]


def rows_of(job: Job, model: ServedModel, max_pixels: int) -> np.ndarray:
    if job.kind == "json":
        return rows_from_json(job.body, model)
    data = file_field(job.body, job.content_type) if job.kind == "multipart" else job.body
    assert model.decoder is not None  # the app takes images only for models with a decoder
    try:
        pixels, _, _ = decode_image(data, model.decoder["color_mode"], tuple(model.decoder["size"]),
                                    model.decoder["formats"], max_pixels)
    except TooManyPixels as exc:
        raise BadRequest(413, f"image: {exc}") from None
    except ImageError as exc:
        raise BadRequest(422, f"image: {exc}") from None
    return pixels[None].astype(model.dtype)


def _refuse_constant(name: str) -> None:
    raise BadRequest(422, f"inputs must be finite numbers, not {name}")


def rows_from_json(body: bytes, model: ServedModel) -> np.ndarray:
    """`{"inputs": [row, ...]}` as an array `(N, *row_shape)` of the model's dtype."""
    shape = list(model.row_shape)
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest(422, "the JSON body is nested too deeply") from None
    except BadRequest:
        raise
    except ValueError as exc:  # JSONDecodeError, a number with too many digits, bad UTF-8
        raise BadRequest(422, f"the body is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), list) or not data["inputs"]:
        raise BadRequest(422, f'send a JSON object {{"inputs": [row, ...]}}: a non-empty list of rows, '
                              f"each of shape {shape}")
    try:
        array = np.array(data["inputs"])
        if array.dtype == object:  # integers beyond int64 (numbers still), or objects and nulls
            array = np.array(data["inputs"], dtype=np.float64)
    except (ValueError, TypeError, OverflowError, RecursionError):  # ragged, too deep, beyond float64
        array = np.array(None)
    if array.dtype.kind not in "biuf" or array.ndim < 1:
        raise BadRequest(422, f"inputs must be rows of numbers, each of shape {shape} (not strings, "
                              "nulls, objects, rows of different lengths or numbers beyond float64)")
    if array.shape[1:] == tuple(shape[1:]) and len(shape) == 3 and shape[0] == 1:
        array = array[:, None]  # one-channel images may leave out the channel axis
    if array.shape[1:] != tuple(shape):
        raise BadRequest(422, f"inputs has shape {list(array.shape)}; the model takes rows of shape {shape} "
                              f"(send [row, ...] even for one row)")
    return cast(array.astype(np.float64, copy=False), model)


def cast(array: np.ndarray, model: ServedModel) -> np.ndarray:
    """float64 rows in the model's dtype, refused when a value does not fit it or its range."""
    if not np.isfinite(array).all():
        raise BadRequest(422, "inputs must be finite numbers (no NaN or infinity)")
    if model.dtype.kind == "f":
        rows = array.astype(model.dtype)
        if not np.isfinite(rows).all():
            raise BadRequest(422, f"inputs hold numbers beyond the range of {model.dtype}")
    else:
        info = np.iinfo(model.dtype)
        if (array != np.round(array)).any() or array.min() < info.min or array.max() > info.max:
            raise BadRequest(422, f"inputs must be whole numbers from {info.min} to {info.max} "
                                  f"({model.dtype})")
        rows = array.astype(model.dtype)
    if model.value_range is not None:
        low, high = model.value_range
        if array.min() < low or array.max() > high:
            raise BadRequest(422, f"inputs must be from {low} to {high} (raw pixel values for an image "
                                  "model)")
    return rows


def file_field(body: bytes, content_type: str) -> bytes:
    """The content of the multipart field named `file`."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise BadRequest(422, "the multipart content-type has no boundary")
    parts: list[dict[str, Any]] = []
    header: list[bytes] = [b"", b""]

    def on_part_begin() -> None:
        parts.append({"headers": {}, "data": []})

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        parts[-1]["headers"][header[0].lower()] = header[1]
        header[:] = [b"", b""]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"].append(data[start:end])

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end,
                 "on_part_data": on_part_data}
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except Exception:  # python-multipart's parse errors, and boundaries it refuses
        raise BadRequest(422, "the multipart body cannot be parsed") from None
    for part in parts:
        disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))[1]
        if disposition.get(b"name") == b"file":
            return b"".join(part["data"])
    raise BadRequest(422, "the multipart body has no field named 'file'")


def _plain(values: np.ndarray) -> list:
    """Rows as lists for JSON: non-finite values (a model can output them) become null."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return np.where(np.isfinite(values), values, None).tolist()
    return values.tolist()


def encode(model: ServedModel, job: Job, outputs: np.ndarray) -> bytes:
    """The answer to one job: `outputs` (one entry per row); for classifiers also `labels` and
    `probabilities` per row; for an image, its label and probabilities."""
    rows = _plain(outputs)
    names = model.class_names
    if names is None:
        return json.dumps({"outputs": rows}).encode()
    labels = [names[i] for i in np.nan_to_num(outputs, nan=-1.0).argmax(-1).tolist()]
    probabilities = [dict(zip(names, row, strict=True)) for row in rows]
    if job.kind != "json":
        return json.dumps({"label": labels[0], "probabilities": probabilities[0]}).encode()
    return json.dumps({"outputs": rows, "labels": labels, "probabilities": probabilities}).encode()
