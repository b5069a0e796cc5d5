"""`summary.json`, the one file that says what a run is, how it went and where its results are.

This module is its only writer: every change goes through `new`, `progress`, `resumed` and
`ended`, and the file is rewritten atomically as strict JSON (`dlops.rundir.atomic`). Readers get
it through `read`, which never raises.
"""

import contextlib
import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from dlops.rundir import atomic, layout

SCHEMA_VERSION = 2  # 2: strict JSON (non-finite numbers are null, listed in `non_finite`)
# what a run's own process records ...
RUN_STATUSES = ("running", "completed", "failed", "interrupted", "diverged", "pruned")
# ... and what only readers say of a run dir: no summary yet, a resume refused, a `running` run
# whose process is gone, a summary that cannot be read, a run from before summary.json
READER_STATUSES = ("missing", "refused", "killed", "unreadable", "unknown")
STATUSES = RUN_STATUSES + READER_STATUSES
# distribution names (dlops' own: dlops-lightning, recorded as `dlops`)
PACKAGES = ("dlops-lightning", "torch", "torchvision", "lightning", "pytorch-lightning", "torchmetrics",
            "hydra-core", "omegaconf", "wandb", "tensorboard", "mlflow", "optuna")


def now() -> str:
    """The current time as an ISO-8601 string with time zone."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def new(run_dir: Path, *, name: Any, tags: list[str], job_num: int | None, overrides: list[str],
        seed: Any, monitor: Any, mode: Any, max_epochs: Any) -> dict[str, Any]:
    """The summary a run starts with: who, what, where, and status `running`."""
    return {
        "schema": SCHEMA_VERSION,
        "status": "running",
        "name": name,
        "tags": tags,
        "run_dir": str(run_dir.resolve()),
        "job_num": job_num,
        "overrides": overrides,
        "started_at": now(),
        "started_at_unix": time.time(),
        "ended_at": None,
        "duration_s": None,
        "seed": seed,
        "monitor": monitor,
        "mode": mode,
        "max_epochs": max_epochs,
        "epochs_completed": 0,
        "global_step": 0,
        "last_metrics": {},
        "best_metric": None,
        "best_checkpoint": None,
        "test_metrics": {},
        "error": None,
        "versions": package_versions(),
        "git": git_commit(os.getcwd()),
        "host": os.uname().nodename,
        "pid": os.getpid(),
    }


def progress(summary: dict[str, Any], *, epochs_completed: int, global_step: int,
             last_metrics: dict[str, float], best_checkpoint: str | None,
             best_metric: float | None) -> None:
    """Record the progress of a running run (after each epoch, and after fitting)."""
    summary.update(updated_at=now(), epochs_completed=epochs_completed, global_step=global_step,
                   last_metrics=last_metrics, best_checkpoint=best_checkpoint, best_metric=best_metric)


def resumed(old: dict[str, Any], *, max_epochs: Any, overrides: list[str],
            resumed_from: dict[str, Any] | None) -> dict[str, Any]:
    """The summary of a resumed run: the old one, status `running`, one more entry in `attempts`.

    `started_at` stays the first start; `attempts` lists every start with its outcome (the last
    attempt's outcome is the top-level status) and `duration_s` adds up the attempts' run times.
    """
    attempts = [dict(a) for a in old.get("attempts") or [_first_attempt(old)]]
    earlier = sum(a.get("duration_s") or 0.0 for a in attempts[:-1])
    previous = attempts[-1]
    ended_at = old.get("ended_at") or old.get("updated_at")
    if old.get("duration_s") is not None:
        length = old["duration_s"] - earlier
    elif old.get("updated_at"):
        length = datetime.fromisoformat(old["updated_at"]).timestamp() - previous["started_at_unix"]
    else:
        length = None
    previous.update(status=old.get("status"), ended_at=ended_at,
                    duration_s=None if length is None else round(length, 3))
    git = git_commit(os.getcwd())
    attempts.append({"started_at": now(), "started_at_unix": time.time(), "host": os.uname().nodename,
                     "pid": os.getpid(), "overrides": overrides, "resumed_from": resumed_from,
                     "git": git})
    return {**old, "schema": SCHEMA_VERSION, "status": "running", "ended_at": None, "duration_s": None,
            "error": None, "max_epochs": max_epochs, "test_metrics": {}, "host": os.uname().nodename,
            "pid": os.getpid(), "versions": package_versions(), "git": git, "attempts": attempts}


def ended(summary: dict[str, Any], status: str, error: dict[str, Any] | None = None) -> None:
    """Record how the run ended: `completed`, or `failed`/`interrupted`/`diverged`/`pruned` with
    the error (type, message, traceback file)."""
    assert status in RUN_STATUSES and status != "running", status
    summary.update(status=status, ended_at=now(), duration_s=duration(summary), error=error)


def duration(summary: dict[str, Any]) -> float:
    """Seconds of running: since this attempt started, plus earlier attempts of a resumed run."""
    attempts = summary.get("attempts") or [summary]
    earlier = sum(a.get("duration_s") or 0.0 for a in attempts[:-1])
    return round(earlier + time.time() - attempts[-1]["started_at_unix"], 3)


def write(run_dir: str | Path, summary: dict[str, Any]) -> None:
    """Atomically rewrite `run_dir/summary.json` as strict JSON; a non-finite number is written
    as null and its key path listed in `non_finite` (e.g. `last_metrics.val_loss`)."""
    found: list[str] = []
    data = atomic.strict({k: v for k, v in summary.items() if k != "non_finite"}, found=found)
    if found:
        data["non_finite"] = found
    atomic.write_bytes(Path(run_dir) / layout.SUMMARY,
                       (json.dumps(data, indent=2, default=str, allow_nan=False) + "\n").encode())


def read(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's summary, or None when the file is missing, unreadable or not a JSON object."""
    try:
        data = json.loads((Path(run_dir) / layout.SUMMARY).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide a run's results."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions["dlops" if name == "dlops-lightning" else name] = metadata.version(name)
    return versions


def git_commit(where: str | Path) -> dict[str, Any] | None:
    """The commit of the git checkout holding `where` (a folder, or a file), whether it had
    uncommitted changes, and the checkout's folder; None outside git, or for a file git ignores
    (e.g. a package installed into a virtual environment inside the checkout)."""
    path = Path(where)
    folder = path if path.is_dir() else path.parent

    def git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True,
                              timeout=5, check=check)
    try:
        if path.is_file() and git("check-ignore", "-q", path.name, check=False).returncode == 0:
            return None
        return {"commit": git("rev-parse", "HEAD").stdout.strip(),
                "dirty": bool(git("status", "--porcelain").stdout.strip()),
                "repo": git("rev-parse", "--show-toplevel").stdout.strip()}
    except (OSError, subprocess.SubprocessError):
        return None


def _first_attempt(old: dict[str, Any]) -> dict[str, Any]:
    return {"started_at": old.get("started_at"), "started_at_unix": old.get("started_at_unix"),
            "host": old.get("host"), "pid": old.get("pid"), "overrides": old.get("overrides", []),
            "resumed_from": None, "git": old.get("git")}
