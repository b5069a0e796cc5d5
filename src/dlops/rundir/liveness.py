"""Whether the process that wrote a run dir still runs: one answer for every caller."""

import math
import os
from pathlib import Path
from typing import Any


def process_alive(pid: int, started_at: float | None = None) -> bool:
    """Whether `pid` runs on this host and (on Linux) is the process that started at `started_at`
    (not a later one that got the same pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        pass
    try:  # a zombie is dead; a process younger than the run is another one with a reused pid
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if stat[0] == "Z":
            return False
        started = _boot_time() + int(stat[19]) / os.sysconf("SC_CLK_TCK")
        return started_at is None or math.isnan(started_at) or started <= started_at + 2
    except (OSError, IndexError, ValueError):
        return True


def writer_state(summary: dict[str, Any]) -> str:
    """Of a summary that says `running`: `alive` (its process runs here), `dead` (it is gone from
    this host) or `elsewhere` (written on another host, e.g. another node of a shared file
    system: it cannot be checked from here and must be taken as alive)."""
    pid, host = summary.get("pid"), summary.get("host")
    if host != os.uname().nodename or not isinstance(pid, int) or isinstance(pid, bool):
        return "elsewhere"
    attempts = summary.get("attempts")
    attempt = attempts[-1] if isinstance(attempts, list) and attempts and isinstance(attempts[-1], dict) \
        else summary  # a resumed run: its latest start
    started = attempt.get("started_at_unix")
    started = float(started) if isinstance(started, int | float) and not isinstance(started, bool) else None
    return "alive" if process_alive(pid, started) else "dead"


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime"):
            return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")
