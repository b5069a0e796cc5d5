"""Read a run dir's files as untrusted data: regular files inside the run dir, of bounded size.

A reader (`dlops report`) follows no symlink out of the run dir, never opens a device or a FIFO
(a read from /dev/zero never ends, an open of a FIFO waits for a writer), and reads at most a
cap per file. Standard library only.
"""

import os
import re
import stat
from pathlib import Path

MiB = 1 << 20
# caps well above what a run writes: summary.json ~3 KB, metrics.csv ~1 KB per epoch,
# evaluation plots ~40 KB
MAX_JSON = 4 * MiB
MAX_YAML = 4 * MiB
MAX_CSV = 64 * MiB
MAX_IMAGE = 16 * MiB
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Unreadable(Exception):
    """A run file is there but not to be read; the message says why."""


def _plain_inside(path: Path, root: Path) -> bool | None:
    """True when `path` is a regular file reached from `root` through no symlink (two lstat
    calls, the common case); None when it does not exist; False when a full check is needed."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
    except FileNotFoundError:
        return None
    except OSError:
        return False
    parent = path.parent
    while parent != root and parent.is_relative_to(root):  # e.g. csv/ of csv/metrics.csv
        if parent.is_symlink():
            return False
        parent = parent.parent
    return parent == root


def check_inside(path: Path, root: Path) -> Path | None:
    """The real path of `path`, a file that resolves inside `root`; None when absent; Unreadable
    when it is a broken symlink, a loop or points outside."""
    plain = _plain_inside(path, root)
    if plain is None:
        return None if not os.path.lexists(path) else _raise(f"{_name(path, root)} is a broken symlink")
    if plain:
        return path
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        return None if not os.path.lexists(path) else _raise(f"{_name(path, root)} is a broken symlink")
    except (OSError, RuntimeError) as exc:  # a symlink loop, a folder we may not enter
        raise Unreadable(f"{_name(path, root)} cannot be resolved ({exc})") from None
    if not real.is_relative_to(root.resolve()):
        raise Unreadable(f"{_name(path, root)} points outside the run dir")
    return real


def _name(path: Path, root: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else path


def read_inside(path: Path, root: Path, limit: int) -> bytes | None:
    """The bytes of `path`; None when it does not exist. Raise Unreadable when it resolves outside
    `root`, is not a regular file, or holds more than `limit` bytes."""
    name = _name(path, root)
    real = check_inside(path, root)
    if real is None:
        return None
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise Unreadable(f"{name} cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable(f"{name} is not a regular file")
        if info.st_size > limit:
            raise Unreadable(f"{name} is larger than {limit // MiB} MiB")
        data = file.read(limit + 1)  # a file that grows while read stops at the cap too
    if len(data) > limit:
        raise Unreadable(f"{name} is larger than {limit // MiB} MiB")
    return data


def read_png(path: Path, root: Path) -> bytes | None:
    """A PNG image inside `root`, or None when it is absent, unreadable or not a PNG."""
    try:
        data = read_inside(path, root, MAX_IMAGE)
    except Unreadable:
        return None
    return data if data and data.startswith(PNG_SIGNATURE) else None


def safe_file_name(name: str, default: str = "metric") -> str:
    """`name` usable as one file name: no separators, no leading dot, printable ASCII, short."""
    cleaned = re.sub(r"[^A-Za-z0-9_.=-]", "_", name).lstrip(".")[:100]
    return cleaned or default


def _raise(reason: str) -> None:
    raise Unreadable(reason)
