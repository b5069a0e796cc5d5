"""One way to write a file that readers share: whole or not at all.

Written to a uniquely named temp file beside the target, flushed to disk, renamed over it, and
the rename made durable: a reader never sees half a file, a crash or a full disk leaves the old
one, and two writers never share a temp file. The file gets the permissions of a newly created
file under the process's umask (mkstemp alone would make it 0600, hiding runs from colleagues on
a shared file system).
"""

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes,
                write: Callable[[BinaryIO, bytes, Path], None] | None = None) -> None:
    """Atomically replace `path` with `data`; an OSError names the file. `write(file, data, path)`
    may stand in for `file.write(data)` (the checkpoint writer's fault injection does)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            (write or _write)(file, data, path)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # "no space left ... while writing summary.json", not None
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _write(file: BinaryIO, data: bytes, path: Path) -> None:
    file.write(data)


def strict(value: Any, path: str = "", found: list[str] | None = None) -> Any:
    """`value` with every NaN and infinity replaced by None (strict JSON has neither); their key
    paths are appended to `found`."""
    if isinstance(value, float) and not math.isfinite(value):
        if found is not None:
            found.append(path)
        return None
    if isinstance(value, dict):
        return {k: strict(v, f"{path}.{k}" if path else str(k), found) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    return value


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write `data` as strict JSON (non-finite numbers as null)."""
    text = json.dumps(strict(data), indent=2, default=str, allow_nan=False)
    write_bytes(path, (text + "\n").encode())
