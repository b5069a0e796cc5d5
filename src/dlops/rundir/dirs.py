"""Directories that are never shared: made with an atomic `mkdir`, given `-2`, `-3`, ... when
one of that name exists (two runs started in the same second, even on a shared file system)."""

import os
from pathlib import Path


def make_unique(path: str | Path) -> Path:
    """Create and return `path`, or `path-2`, `path-3`, ... when it exists; its parents are made.
    An OSError (not writable, no space) is raised for the caller to word."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 1
    while True:
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = path.with_name(f"{path.name}-{n}")
