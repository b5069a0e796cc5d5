"""Strict JSON for run files: no NaN or Infinity (which `json` writes by default), and the umask.

Standard library only.
"""

import math
import os
from pathlib import Path
from typing import Any

NON_FINITE = "non_finite"  # the key that lists where a number was NaN or infinite


def _replace(value: Any, where: str, found: list[str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        found.append(f"{where}={value}")
        return None
    if isinstance(value, dict):
        return {k: _replace(v, f"{where}.{k}" if where else str(k), found) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_replace(v, f"{where}[{i}]", found) for i, v in enumerate(value)]
    return value


def finite_only(data: Any) -> Any:
    """`data` with every NaN and infinity replaced by None; a dict gets `non_finite`: the dotted
    names of those values with what they were (`last_metrics.val_loss=nan`), or loses the key."""
    found: list[str] = []
    clean = _replace(data, "", found)
    if isinstance(clean, dict):
        clean.pop(NON_FINITE, None)
        if found:
            clean[NON_FINITE] = found
    return clean


def umask() -> int:
    """This process's umask, read without changing it where Linux says it (no race with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open(path, "w")` gives a new file: 0666 less the umask."""
    return 0o666 & ~umask()
