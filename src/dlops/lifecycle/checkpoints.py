"""Checkpoint files: plain data written atomically, read with torch's safe loader and checked before use."""

import errno
import io
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import torch
from omegaconf import OmegaConf

from dlops.errors import ConfigError
from dlops.lightning import Adaptable
from dlops.rundir import atomic
from dlops.rundir.safe_text import printable

# Fault injection for tests of the disk-full path, e.g. DLOPS_SIMULATE_DISK_FULL=last.ckpt:2 - the
# 2nd write of a file named last.ckpt in this process stops halfway with ENOSPC, exactly where a
# full disk would stop it (a bare number counts every checkpoint file).
DISK_FULL = "DLOPS_SIMULATE_DISK_FULL"
_writes: dict[str, int] = {}


def _write(file: io.BufferedWriter, data: bytes, path: Path) -> None:
    name, _, nth = os.environ.get(DISK_FULL, "").rpartition(":")
    if nth and name in ("", path.name):
        _writes[name] = _writes.get(name, 0) + 1
        if _writes[name] == int(nth):
            file.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    file.write(data)


def save_atomic(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write `checkpoint` atomically (`dlops.rundir.atomic`: temp file, fsync, rename): a crash or
    a full disk during the write leaves the previous file at `path` as it was."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic.write_bytes(path, buffer.getbuffer().tobytes(), write=_write)


# where Lightning puts the hyperparameters of the model and of the datamodule -> the config node
# that built them
HYPERPARAMETERS = {"hyper_parameters": "model", "datamodule_hyper_parameters": "datamodule"}
# what torch's safe loader (`weights_only=True`) reads back as it was saved
_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.dtype, torch.device,
          torch.Size)


def as_data(value: Any, config: Any = None) -> Any:
    """`value` as plain data that torch's safe loader reads back: numbers, strings, tensors and
    containers of them. An object (a module, a `functools.partial`, a class, ...) becomes the
    config that built it, `config`, when there is one, else a description naming its type: a
    checkpoint never holds a pickled object. (`save_hyperparameters()` in template-style modules
    stores the net and the optimizer's partial themselves.)"""
    if isinstance(value, _PLAIN):
        return value
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True, throw_on_missing=False)
    if isinstance(value, Mapping):
        plain = {k: as_data(v, config.get(k) if isinstance(config, Mapping) else None)
                 for k, v in value.items() if isinstance(k, str | int | float | bool)}
        return OrderedDict(plain) if isinstance(value, OrderedDict) else plain
    if isinstance(value, list | tuple):
        items = [as_data(v, config[i] if isinstance(config, list) and i < len(config) else None)
                 for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "dtype") and hasattr(value, "tolist") and type(value).__module__ == "numpy":
        return torch.as_tensor(value) if getattr(value, "ndim", 0) else value.item()  # numpy
    if config is not None:
        return config
    named = value if isinstance(value, type) or hasattr(value, "__qualname__") else type(value)  # a function
    return (f"<{getattr(named, '__module__', '?')}.{named.__qualname__}: not plain data, so not saved; "
            "the run's config rebuilds it>")


class AtomicCheckpointIO(Adaptable):
    """Lightning's checkpoint writer, made safe: plain data only (`as_data`), written atomically
    (temp file, fsync, rename).

    `configs`: the run's resolved `model` and `datamodule` config nodes, stored in place of the
    hyperparameters they built that are not plain data.
    """

    lightning_base = "plugins.io.TorchCheckpointIO"

    def __init__(self, configs: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.configs = configs or {}

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        plain = {key: as_data(value, self.configs.get(HYPERPARAMETERS.get(key, "")))
                 for key, value in checkpoint.items()}
        save_atomic(plain, path)


_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # torch bolds words of its messages for terminals


def _reason(exc: BaseException) -> str:
    text = _ESCAPES.sub("", str(exc)).strip()
    return printable(text.splitlines()[0]) if text else type(exc).__name__


def load_data(path: str | Path) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU, or ConfigError saying in one line why not:
    missing, not a regular file, holding pickled objects (named), or damaged."""
    path = Path(path)
    if path.exists() and not path.is_file():  # torch.load would wait on a FIFO for ever
        raise ConfigError(f"checkpoint {path} is not a regular file (a folder, a device or a FIFO).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"checkpoint {path} does not exist.") from None
    except Exception as exc:  # pickled objects; or a truncated zip, garbage bytes: unusable
        objects = _pickled_objects(path) if isinstance(exc, pickle.UnpicklingError) else None
        if objects:
            raise ConfigError(
                f"checkpoint {path} holds pickled objects ({', '.join(objects)}); dlops loads data only "
                "(torch.load with weights_only=True), because loading objects runs code from the file. "
                "Checkpoints dlops writes hold plain data; for a file of your own that you trust, "
                "load it yourself and save its state_dict.") from None
        raise ConfigError(f"checkpoint {path} is corrupt or truncated and cannot be loaded "
                          f"({_reason(exc)}).") from None


def _pickled_objects(path: Path) -> list[str]:
    """The classes and functions a checkpoint would have to import to load (read, never run)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint at all: it is damaged
        return []
    names = sorted(names, key=lambda name: name.startswith(("torch.", "builtins.")))  # the user's first
    return [printable(name) for name in names[:5]] + (["..."] if len(names) > 5 else [])


def read_checkpoint(path: str | Path, training: bool = True) -> dict[str, Any]:
    """Load a checkpoint with torch's safe loader (`load_data`), or raise ConfigError saying what
    is wrong. `training`: it must be a Lightning training checkpoint (loops, epoch, step), not
    only weights."""
    checkpoint = load_data(path)
    needed = ("state_dict", "loops", "epoch", "global_step") if training else ("state_dict",)
    missing = [k for k in needed if k not in checkpoint] if isinstance(checkpoint, dict) else ["everything"]
    if missing:
        raise ConfigError(f"checkpoint {path} is not a Lightning {'training ' if training else ''}"
                          f"checkpoint (no {', '.join(missing)}).")
    return checkpoint


def check_model(checkpoint: dict[str, Any], net_config: dict[str, Any], path: str | Path) -> None:
    """Raise ConfigError if the checkpoint holds another net than `net_config` (model.net) builds."""
    saved = (checkpoint.get("hyper_parameters") or {}).get("net")
    if saved != net_config:
        raise ConfigError(f"checkpoint {path} belongs to another model: its net is {saved}, "
                          f"this run's model.net is {net_config}.")
