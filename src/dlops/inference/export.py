"""`dlops export RUN`: the run's model as ONNX, verified against torch before it counts as done.

Writes `RUN/export/model.onnx` (dynamic batch axis; for classifiers class probabilities out, for
image classifiers raw 0-255 pixels in, the preprocessing inside the graph) and
`RUN/export/model.json` (what goes in and out, class names, how images are decoded, the source
checkpoint and its sha256, versions, and the parity figures of the check). Both are written to
a temp folder first and moved in only when the check passes, so `export/` never holds an
unverified model.
"""

import errno
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlops.errors import ConfigError
from dlops.inference.classify import ClassProbabilities, is_classifier, is_image_classifier
from dlops.inference.restore import load_weights, relative_to_run, restore, sha256
from dlops.rundir import atomic, layout
from dlops.serve.images import FILE_FORMATS, SERVED_FORMATS, decoder_info

log = logging.getLogger(__name__)

OPSET = 18
TOLERANCE = 1e-4  # max abs difference of outputs allowed between onnxruntime and torch
BATCHES = (1, 33)  # verified batch sizes: one image, and an odd batch


def first_inputs(datamodule: Any, count: int) -> tuple[torch.Tensor | None, str, str]:
    """The first `count` inputs of the first split the datamodule gives (test, val, train), when
    its batches are a tensor or a tuple/list starting with one; else None. Also the split, and the
    type of batch when it is none of these."""
    for split in ("test", "val", "train"):
        try:
            if split == "test":
                datamodule.setup("test")
            loader = getattr(datamodule, f"{split}_dataloader")()
        except Exception:  # a datamodule without this split: Lightning raises for an unimplemented one
            continue
        taken: list[torch.Tensor] = []
        for batch in loader:
            inputs = batch[0] if isinstance(batch, list | tuple) and batch else batch
            if not isinstance(inputs, torch.Tensor):
                return None, split, type(batch).__name__
            taken.append(inputs)
            if sum(len(t) for t in taken) >= count:
                break
        if taken:
            return torch.cat(taken)[:count], split, ""
    return None, "", ""


def example_and_inputs(model: Any, datamodule: Any, count: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """What the graph is exported with (one small batch), what it is verified on (up to `count`
    rows), and where those came from.

    The model's `example_input_array` (Lightning's convention) when it has one, else the first
    inputs of its data, when its batches are a tensor or a tuple whose first item is one.
    """
    kind = type(model).__name__
    example = getattr(model, "example_input_array", None)
    if example is not None and not isinstance(example, torch.Tensor):
        raise ConfigError(f"{kind}.example_input_array is a {type(example).__name__}; dlops exports a "
                          "forward that takes one tensor. Set it to one batch of that tensor.")
    real, split, batch_type = first_inputs(datamodule, count)
    if example is None and real is None:
        where = f"its {split} batches are {batch_type}s" if batch_type else "its datamodule gives no batches"
        raise ConfigError(f"cannot tell what {kind}.forward takes: {where}, not a tensor or a tuple "
                          f"starting with one. Set self.example_input_array to one batch of the tensor "
                          f"forward takes (e.g. torch.zeros(2, 10) in {kind}.__init__) and export again.")
    if example is None:
        return real[:2], real, f"the first inputs of the run's {split} split"
    if real is not None and real.shape[1:] == example.shape[1:] and real.dtype == example.dtype:
        return example, real, f"the first inputs of the run's {split} split"
    tiled = example.repeat(-(-count // len(example)), *[1] * (example.ndim - 1))[:count]
    if not example.is_floating_point():
        return example, tiled, f"{kind}.example_input_array, repeated to {count} rows"
    # rows that differ, so that every weight counts (a zero example checks only the biases)
    noise = torch.randn(tiled.shape, generator=torch.Generator().manual_seed(0)).to(example.dtype)
    spread = float(example.float().std()) if example.numel() > 1 else 0.0
    return example, tiled + noise * (spread or 1.0), \
        f"{kind}.example_input_array, repeated to {count} rows with seeded noise added"


def verify(onnx_file: Path, net: torch.nn.Module, inputs: torch.Tensor, source: str) -> dict[str, Any]:
    """onnxruntime against torch on `inputs`, at each batch size of BATCHES: max abs difference and
    whether the argmax agrees on every row."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    checks = []
    for size in BATCHES:
        batch = inputs[: min(size, len(inputs))]
        with torch.inference_mode():
            expected = net(batch).float().numpy()
        got = session.run(None, {name: batch.numpy()})[0]
        one_column = expected.ndim < 2 or expected.shape[-1] < 2  # no argmax to compare
        argmax = one_column or bool((expected.argmax(-1) == got.argmax(-1)).all())
        checks.append({"batch_size": len(batch), "max_abs_diff": float(np.abs(expected - got).max()),
                       "argmax_agrees": argmax})
    passed = all(c["max_abs_diff"] <= TOLERANCE and c["argmax_agrees"] for c in checks)
    return {"passed": passed, "tolerance": TOLERANCE, "inputs": source, "batches": checks}


def to_onnx(net: torch.nn.Module, example: torch.Tensor, path: Path, names: tuple[str, str]) -> None:
    """torch.export-based ONNX export with a dynamic batch axis; ConfigError with the reason if it fails."""
    import warnings

    batch = torch.export.Dim("batch", min=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), str(path), input_names=[names[0]], output_names=[names[1]],
                              dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True,
                              external_data=False, verbose=False)
    except Exception as exc:  # the exporter raises many kinds; all mean "this model cannot go to ONNX" ...
        from dlops.lifecycle.failures import causes

        for cause in causes(exc):  # ... but a full disk is no fault of the model's
            if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
                cause.filename = cause.filename or str(path)
                raise cause from None
        reason = " ".join(str(exc).split())[:600] or type(exc).__name__
        raise ConfigError(f"{type(net).__name__} cannot be exported to ONNX: {reason}") from None


def describe(model: Any, datamodule: Any, example: torch.Tensor, output: torch.Tensor,
             names: tuple[str, str]) -> dict[str, Any]:
    """model.json's description of what goes in and what comes out (and, for image classifiers,
    how `dlops serve` decodes an uploaded image into the input)."""
    shape = ["batch", *example.shape[1:]]
    info: dict[str, Any] = {
        "input": {"name": names[0], "shape": shape, "dtype": str(example.dtype).removeprefix("torch."),
                  "meaning": "what the model's forward takes, one row per example"},
        "output": {"name": names[1], "shape": ["batch", *output.shape[1:]],
                   "dtype": str(output.dtype).removeprefix("torch."),
                   "meaning": "the model's forward output"},
    }
    if not is_classifier(model):
        return info
    class_names = [str(name) for name in model.hparams.class_names]
    info["output"]["meaning"] = "probabilities, one column per class in class_names order (they sum to 1)"
    info["class_names"] = class_names
    if is_image_classifier(model):
        info["input"].update(
            range=[0, 255], color_mode="L" if example.shape[1] == 1 else "RGB",
            meaning="raw pixel values 0-255 as float32, (batch, channels, height, width); the "
                    "model's scaling and normalisation are inside the graph")
        formats = set(getattr(datamodule, "image_formats", None) or ()) & set(FILE_FORMATS)
        info["decoder"] = decoder_info(list(example.shape[1:]), sorted(formats | set(SERVED_FORMATS)))
    return info


def remove_stale_temp_dirs(export_dir: Path) -> None:
    """Remove the temp folders of exports whose process is gone (kill -9 leaves them): this host's
    `.tmp-<host>-<pid>`, and the `.tmp-<pid>` of earlier versions. Another host's are left alone:
    whether its process runs cannot be told from here."""
    from dlops.rundir.liveness import process_alive

    for prefix in (f".tmp-{os.uname().nodename}-", ".tmp-"):
        for folder in export_dir.glob(f"{prefix}*") if export_dir.is_dir() else []:
            pid = folder.name[len(prefix):]
            if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)) \
                    and folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)


def export_model(model: Any, datamodule: Any, run_dir: Path, checkpoint: Path,
                 say: Callable[[str], None] = log.info) -> Path:
    """Export `model` with the weights of `checkpoint` into RUN/export/, verified; return model.json.
    `say` gets a line as each stage starts (the export, the check)."""
    import onnx
    import onnxruntime

    from dlops import __version__

    load_weights(model, checkpoint)
    model = model.cpu().eval()
    classifier = is_classifier(model)
    net = ClassProbabilities(model).eval() if classifier else model
    names = ("pixels" if is_image_classifier(model) else "input", "probabilities" if classifier else "output")
    example, inputs, source = example_and_inputs(model, datamodule, max(BATCHES))
    if is_image_classifier(model):
        example, inputs = example.float(), inputs.float()
    with torch.inference_mode():
        output = net(example)
    if not isinstance(output, torch.Tensor):
        raise ConfigError(f"{type(model).__name__}.forward returns a {type(output).__name__}; dlops "
                          "exports a forward that returns one tensor.")
    export_dir = run_dir / layout.EXPORT
    remove_stale_temp_dirs(export_dir)
    made = not export_dir.exists()
    tmp = export_dir / f".tmp-{os.uname().nodename}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        say(f"exporting {type(model).__name__} ({relative_to_run(checkpoint, run_dir)}) to ONNX, opset "
            f"{OPSET}, with torch's exporter")
        to_onnx(net, example, tmp / "model.onnx", names)
        say(f"verifying model.onnx against torch with onnxruntime at batch sizes "
            f"{' and '.join(map(str, BATCHES))} ({source})")
        check = verify(tmp / "model.onnx", net, inputs, source)
        if not check["passed"]:
            raise ConfigError(f"the ONNX model of {type(model).__name__} does not match torch within "
                              f"{TOLERANCE}: {check['batches']}; nothing was written to {export_dir}.")
        opset = next(o.version for o in onnx.load(str(tmp / "model.onnx")).opset_import if o.domain == "")
        info = {
            "format": "onnx",
            "file": "model.onnx",
            "opset": opset,
            "model": type(model).__name__,
            **describe(model, datamodule, example, output, names),
            "source_checkpoint": {"path": relative_to_run(checkpoint, run_dir), "sha256": sha256(checkpoint)},
            "verification": check,
            "versions": {"dlops": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                         "onnxruntime": onnxruntime.__version__},
        }
        atomic.write_json(tmp / "model.json", info)
        os.replace(tmp / "model.onnx", run_dir / layout.EXPORT_MODEL)
        os.replace(tmp / "model.json", run_dir / layout.EXPORT_INFO)  # last: it vouches for model.onnx
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if made and not any(export_dir.iterdir()):  # a failed first export leaves no empty export/
            export_dir.rmdir()
    return run_dir / layout.EXPORT_INFO


def export_run(run_dir: str | Path, ckpt: str = "best", fmt: str = "onnx",
               say: Callable[[str], None] = log.info) -> tuple[Path, Any]:
    """`dlops export`: restore the run with checkpoint `ckpt` and export it; model.json and the
    run's config (which says where `log_run_export` logs the model)."""
    if fmt != "onnx":
        raise ConfigError(f"--format {fmt}: only onnx is supported.")
    restored = restore(run_dir, ckpt)
    info = export_model(restored.model, restored.datamodule, restored.run_dir, restored.checkpoint, say)
    return info, restored.cfg


def summary_entry(model_json: Path, run_dir: Path) -> dict[str, Any]:
    """summary.json's `export`: where the export is, from what, and the check it passed."""
    info = json.loads(model_json.read_text())  # the one export_model has just written
    return {"format": info["format"], "path": relative_to_run(model_json.parent / info["file"], run_dir),
            "model_json": relative_to_run(model_json, run_dir), "opset": info["opset"],
            "source_checkpoint": info["source_checkpoint"]["path"], "verification": info["verification"]}


def describe_export(entry: dict[str, Any]) -> str:
    """One line for an export (a `summary_entry`): where it went and how it was verified."""
    check = entry["verification"]
    diffs = ", ".join(f"batch {c['batch_size']}: max abs diff {c['max_abs_diff']:.2e}"
                      for c in check["batches"])
    return (f"exported {entry['source_checkpoint']} to {entry['path']} and {entry['model_json']} (opset "
            f"{entry['opset']}); verified against torch within {check['tolerance']:g}, argmax agrees: "
            f"{diffs}")


def log_run_export(run_dir: Path, cfg: Any) -> list[str]:
    """Log a run's export to its trackers that keep models (its MLflow run); what was logged.
    summary.json is only read: training files are never changed."""
    from dlops.rundir import summary as run_summary
    from dlops.tracking.loggers import log_exports

    return log_exports(cfg, run_summary.read(run_dir) or {}, run_dir)


def export_after_training(cfg: Any, model: Any, datamodule: Any, run_dir: Path,
                          best: str | None) -> dict[str, Any]:
    """The `export=onnx` option: export the run's best (or last) checkpoint when training ends;
    its summary entry (see `summary_entry`), also said in the log."""
    from dlops.inference.restore import find_checkpoint

    fmt, which = cfg.export.get("format", "onnx"), cfg.export.get("ckpt", "best")
    if fmt != "onnx":
        raise ConfigError(f"export.format={fmt}: only onnx is supported.")
    checkpoint = run_dir / best if which == "best" and best else find_checkpoint(run_dir, "last")
    model_json = export_model(model, datamodule, run_dir.resolve(), checkpoint.resolve())
    entry = summary_entry(model_json, run_dir.resolve())
    log.info(describe_export(entry))
    return entry
