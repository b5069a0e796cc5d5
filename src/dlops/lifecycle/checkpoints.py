"""Checkpoint files: written atomically, read with torch's safe loader and checked before use."""

import errno
import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from dlops.errors import ConfigError
from dlops.rundir import atomic

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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer with `save_atomic` (temp file, fsync, rename)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        save_atomic(checkpoint, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint with torch's safe loader, or raise ConfigError saying what is wrong."""
    path = Path(path)
    if path.exists() and not path.is_file():  # torch.load would wait on a FIFO for ever
        raise ConfigError(f"checkpoint {path} is not a regular file (a folder, a device or a FIFO).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"checkpoint {path} does not exist.") from None
    except Exception as exc:  # truncated zip, garbage bytes, pickled objects: all unusable
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"checkpoint {path} is corrupt or truncated and cannot be loaded "
                          f"({reason}).") from None
    missing = [k for k in ("state_dict", "loops", "epoch", "global_step") if k not in checkpoint] \
        if isinstance(checkpoint, dict) else ["everything"]
    if missing:
        raise ConfigError(f"checkpoint {path} is not a Lightning training checkpoint "
                          f"(no {', '.join(missing)}).")
    return checkpoint


def check_model(checkpoint: dict[str, Any], net_config: dict[str, Any], path: str | Path) -> None:
    """Raise ConfigError if the checkpoint holds another net than `net_config` (model.net) builds."""
    saved = (checkpoint.get("hyper_parameters") or {}).get("net")
    if saved != net_config:
        raise ConfigError(f"checkpoint {path} belongs to another model: its net is {saved}, "
                          f"this run's model.net is {net_config}.")
