"""The exported model as `dlops serve` runs it: RUN/export/model.json read as untrusted data and
checked against the ONNX graph's own inputs and outputs before the server starts."""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlops.errors import ConfigError
from dlops.rundir import layout
from dlops.rundir.safe_read import MAX_JSON, Unreadable, read_inside
from dlops.serve.images import FILE_FORMATS, SERVED_FORMATS, decoder_info

MAX_ONNX = 2 << 30  # protobuf's own limit for one message
MAX_ROW_VALUES = 1 << 24  # values in one input row: a 4096x4096 RGB image
# model.json dtypes and onnxruntime's names for them
DTYPES = {"float16": "tensor(float16)", "float32": "tensor(float)", "float64": "tensor(double)",
          "int8": "tensor(int8)", "int16": "tensor(int16)", "int32": "tensor(int32)",
          "int64": "tensor(int64)", "uint8": "tensor(uint8)"}


@dataclass
class ServedModel:
    """What serving needs of an export, checked: the session and the contract of its input."""

    session: Any  # onnxruntime.InferenceSession
    input_name: str
    row_shape: tuple[int, ...]  # one input row, without the batch axis
    dtype: np.dtype
    value_range: tuple[float, float] | None  # e.g. (0, 255) for raw pixels
    class_names: list[str] | None  # a classifier's, in output column order
    decoder: dict[str, Any] | None  # color_mode, size, formats: image uploads, for image classifiers
    info: dict[str, Any]  # model.json as checked

    def run(self, rows: np.ndarray) -> np.ndarray:
        """The model's output for a batch of rows."""
        return self.session.run(None, {self.input_name: rows})[0]


def load_model(run_dir: str | Path, threads: int = 1) -> ServedModel:
    """RUN's export, checked, with an onnxruntime session on `threads` threads; ConfigError with
    one message when it is missing, unreadable, or does not match its own graph."""
    run = Path(run_dir)
    if not (run / layout.HYDRA_CONFIG).is_file():
        raise ConfigError(f"{run_dir} is not a dlops run directory (no .hydra/config.yaml); give a run "
                          "directory such as outputs/<date>/<time>.")
    again = f"Export the run again: dlops export {run_dir}"
    try:
        text = read_inside(run / layout.EXPORT_INFO, run, MAX_JSON)
        graph = read_inside(run / layout.EXPORT_MODEL, run, MAX_ONNX) if text is not None else None
    except Unreadable as exc:
        raise ConfigError(f"cannot serve {run_dir}: {exc}. {again}") from None
    if text is None or graph is None:
        raise ConfigError(f"{run_dir} has not been exported yet (no export/model.onnx + model.json); "
                          f"run: dlops export {run_dir}")
    try:
        info = check_info(text)
    except ValueError as exc:
        raise ConfigError(f"{run_dir}/export/model.json is not one dlops can serve: {exc}. {again}") from None
    session = open_session(graph, threads, f"{run_dir}/export/model.onnx", again)
    try:
        check_graph(info, session)
    except ValueError as exc:
        raise ConfigError(f"{run_dir}/export/model.json does not match model.onnx: {exc}. {again}") from None
    inputs = info["input"]
    return ServedModel(session, inputs["name"], tuple(inputs["shape"][1:]), np.dtype(inputs["dtype"]),
                       tuple(inputs["range"]) if "range" in inputs else None, info.get("class_names"),
                       info.get("decoder"), info)


def open_session(graph: bytes, threads: int, name: str, again: str) -> Any:
    """An onnxruntime session on the CPU, `threads` threads for one run, no busy-waiting threads
    (they would take a core from the server on a small machine)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: warnings about unused initialisers are not the user's
    try:
        return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own kinds for every broken graph
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ConfigError(f"{name} cannot be loaded by onnxruntime ({reason}). {again}") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _positive_ints(value: Any) -> bool:
    return all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in value)


def check_info(text: bytes) -> dict[str, Any]:
    """model.json parsed and checked field by field; ValueError naming the first problem."""
    try:
        info = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"it is not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise ValueError(f"it holds a {type(info).__name__}, not an object")
    inputs, output = info.get("input"), info.get("output")
    if not isinstance(inputs, dict) or not isinstance(output, dict):
        raise ValueError("it has no 'input' and 'output' objects")
    shape = inputs.get("shape")
    if not (isinstance(inputs.get("name"), str) and isinstance(output.get("name"), str)):
        raise ValueError("input.name and output.name must be strings")
    if not (isinstance(shape, list) and len(shape) >= 2 and shape[0] == "batch"
            and _positive_ints(shape[1:])):
        raise ValueError(f"input.shape must be ['batch', sizes...], got {shape!r}"[:300])
    if math.prod(shape[1:]) > MAX_ROW_VALUES:
        raise ValueError(f"input.shape {shape} holds over {MAX_ROW_VALUES} values a row")
    if inputs.get("dtype") not in DTYPES:
        raise ValueError(f"input.dtype must be one of {', '.join(DTYPES)}, got {inputs.get('dtype')!r}"[:300])
    value_range = inputs.get("range")
    if value_range is not None and not (
            isinstance(value_range, list) and len(value_range) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value_range)
            and value_range[0] < value_range[1]):
        raise ValueError(f"input.range must be [low, high], got {value_range!r}"[:300])
    names = info.get("class_names")
    if names is not None and not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)
                                  and len(set(names)) == len(names)):
        raise ValueError("class_names must be a list of distinct strings")
    decoder = info.get("decoder")
    if decoder is None and names is not None and "color_mode" in inputs and len(shape) == 4:
        decoder = info["decoder"] = decoder_info(shape[1:], SERVED_FORMATS)  # exported before `decoder`
    if decoder is not None:
        check_decoder(decoder, shape[1:])
    return info


def check_decoder(decoder: Any, row_shape: list[int]) -> None:
    """model.json's `decoder` (how image uploads become input rows) against the input shape."""
    if not isinstance(decoder, dict):
        raise ValueError("decoder must be an object")
    channels = {"L": 1, "RGB": 3}.get(decoder.get("color_mode"))
    if len(row_shape) != 3 or channels != row_shape[0]:
        raise ValueError(f"decoder.color_mode {decoder.get('color_mode')!r} does not fit input rows of "
                         f"shape {row_shape} (L: 1 channel, RGB: 3)"[:300])
    if decoder.get("size") != row_shape[1:]:
        raise ValueError(f"decoder.size {decoder.get('size')!r} is not the input's height and width "
                         f"{row_shape[1:]}"[:300])
    formats = decoder.get("formats")
    if not (isinstance(formats, list) and formats and all(f in FILE_FORMATS for f in formats)):
        raise ValueError(f"decoder.formats must list image formats from {', '.join(FILE_FORMATS)}, "
                         f"got {formats!r}"[:300])


def check_graph(info: dict[str, Any], session: Any) -> None:
    """model.json's input and output against the graph's own; ValueError naming the first mismatch."""
    graph_inputs, graph_outputs = session.get_inputs(), session.get_outputs()
    if len(graph_inputs) != 1:
        raise ValueError(f"the graph takes {len(graph_inputs)} inputs; dlops serves models of one input")
    graph_in, graph_out = graph_inputs[0], graph_outputs[0]
    inputs, output = info["input"], info["output"]
    if graph_in.name != inputs["name"] or graph_out.name != output["name"]:
        raise ValueError(f"model.json names input {inputs['name']!r} and output {output['name']!r}, the "
                         f"graph {graph_in.name!r} and {graph_out.name!r}"[:300])
    dims = list(graph_in.shape)
    if isinstance(dims[0], int) or len(dims) != len(inputs["shape"]) or any(
            isinstance(g, int) and g != m for g, m in zip(dims[1:], inputs["shape"][1:], strict=True)):
        raise ValueError(f"model.json says input shape {inputs['shape']}, the graph takes {dims} "
                         "(a dynamic batch axis first)"[:300])
    if graph_in.type != DTYPES[inputs["dtype"]]:
        raise ValueError(f"model.json says input dtype {inputs['dtype']}, the graph takes {graph_in.type}")
    out_dims = list(graph_out.shape)
    said = output.get("shape")
    if isinstance(said, list) and (len(said) != len(out_dims) or any(
            isinstance(g, int) and g != m for g, m in zip(out_dims[1:], said[1:], strict=True))):
        raise ValueError(f"model.json says output shape {said}, the graph gives {out_dims}"[:300])
    names = info.get("class_names")
    if names is not None and (len(out_dims) != 2 or out_dims[1] != len(names)):
        raise ValueError(f"model.json names {len(names)} classes, the graph's output has shape {out_dims} "
                         "(one probability per class expected)"[:300])
