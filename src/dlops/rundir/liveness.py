"""Whether the process that wrote a run dir still runs: one answer for every caller."""

import math
import os
import re
import subprocess
from pathlib import Path
from typing import Any

# what a run under SLURM records in summary.json (`slurm`), and what `lost` checks against
SLURM_JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?")
# the states of a job whose processes may still run (SLURM ends every process of a job that ended)
SLURM_LIVE_STATES = ("RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
                     "CONFIGURING", "RESIZING")
# scontrol waits for an unreachable controller (MessageTimeout, 10 s by default, then retries):
# once it timed out, this process asks it no more, so that a report of many runs is not minutes
SCONTROL_TIMEOUT_S = 15
_scontrol_timed_out: list[str] = []


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
    this host), `elsewhere` (written on another host, e.g. another node of a shared file system:
    it cannot be checked from here and must be taken as alive) or `lost` (written on another
    host by a SLURM job that SLURM says no longer runs that attempt: its node went down, the job
    was requeued, or it ended)."""
    pid, host = summary.get("pid"), summary.get("host")
    if host != os.uname().nodename or not isinstance(pid, int) or isinstance(pid, bool):
        return "lost" if slurm_attempt_over(summary.get("slurm")) else "elsewhere"
    attempts = summary.get("attempts")
    attempt = attempts[-1] if isinstance(attempts, list) and attempts and isinstance(attempts[-1], dict) \
        else summary  # a resumed run: its latest start
    started = attempt.get("started_at_unix")
    started = float(started) if isinstance(started, int | float) and not isinstance(started, bool) else None
    return "alive" if process_alive(pid, started) else "dead"


def slurm_attempt_over(record: Any) -> bool:
    """Whether SLURM says that the attempt of the job in `record` (summary.json's `slurm`: job id,
    restart count, cluster) no longer runs: the job is not running now, or it was started again
    since. False whenever that cannot be known here (no SLURM, another cluster, no answer)."""
    if not isinstance(record, dict) or not isinstance(record.get("job"), str) \
            or not SLURM_JOB_ID.fullmatch(record["job"]) or _scontrol_timed_out:
        return False
    try:  # one line of KEY=VALUE pairs; a job that ended minutes ago is no longer known
        result = subprocess.run(["scontrol", "--oneliner", "show", "job", record["job"]],
                                capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        _scontrol_timed_out.append(str(exc))
        return False
    except (OSError, subprocess.SubprocessError):  # no SLURM here
        return False
    if result.returncode != 0:
        cluster = record.get("cluster")  # it ended long ago, if it was this cluster's
        return "Invalid job id" in result.stderr and isinstance(cluster, str) and _slurm_cluster() == cluster
    state = re.search(r"\bJobState=(\S+)", result.stdout)
    restarts = re.search(r"\bRestarts=([0-9]+)", result.stdout)
    if not state or not restarts:
        return False
    return state[1] not in SLURM_LIVE_STATES or int(restarts[1]) != record.get("restarts")


def _slurm_cluster() -> str | None:
    """The name of the cluster this host's SLURM commands talk to."""
    try:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                                timeout=SCONTROL_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"^ClusterName\s*=\s*(\S+)", config, re.MULTILINE)
    return found[1] if found else None


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime"):
            return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")
