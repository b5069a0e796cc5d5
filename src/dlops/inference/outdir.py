"""Where an eval or predict writes: a new, timestamped folder under the run dir, or a file the
person names; either way a failure (a full disk, Ctrl-C) leaves no empty or half-made folder."""

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

from dlops.errors import ConfigError
from dlops.rundir import atomic, dirs


def new_dir(parent: Path) -> Path:
    """`parent/<YYYY-MM-DD_HH-MM-SS>`, made now; `-2`, `-3`, ... when one from this second exists."""
    return dirs.make_unique(parent / datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))


def _missing_folders(path: Path) -> list[Path]:
    """The folders above `path` that do not exist yet, deepest first."""
    return [p for p in path.parents if not p.exists()]


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; a folder something else wrote into stays
        with suppress(OSError):
            folder.rmdir()


@contextmanager
def new_output_dir(parent: Path) -> Iterator[Path]:
    """A new `parent/<date>_<time>` (see `new_dir`) for the block to fill; removed again, with
    `parent` if this made it and it is empty, when the block raises."""
    made = _missing_folders(parent / "x")
    folder = new_dir(parent)
    try:
        yield folder
    except BaseException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        _remove_empty(made)
        if isinstance(exc, OSError) and exc.filename is None:  # e.g. a plot that did not fit on the disk
            exc.filename = str(folder)
        raise


def write_out(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (its folders made); on failure nothing new stays, and a
    place that cannot be written is one message (a full disk is left to name itself)."""
    made = _missing_folders(path)
    try:
        atomic.write_bytes(path, data)
    except BaseException as exc:
        _remove_empty(made)
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            reason = exc.strerror or str(exc)
            raise ConfigError(f"cannot write --out {path}: {reason}. Give a file in a folder you can "
                              "write to.") from None
        raise
    return path

