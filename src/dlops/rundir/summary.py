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

from dlops.rundir import atomic, layout, safe_read

SCHEMA_VERSION = 2  # 2: strict JSON (non-finite numbers are null, listed in `non_finite`)
# what a run's own process records ...
RUN_STATUSES = ("running", "completed", "failed", "interrupted", "diverged", "pruned")
# ... and what only readers say of a run dir: no summary yet, a resume refused, a `running` run
# whose process is gone, a `running` run whose SLURM job no longer runs it (its node went down,
# it was requeued or ended), a summary that cannot be read, a run from before summary.json
READER_STATUSES = ("missing", "refused", "killed", "lost", "unreadable", "unknown")
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
        "slurm": slurm_job(),
    }


MAX_CONFIG_VALUE = 250  # characters of one value in `config` (MLflow's limit for a param is 500)


def flat_config(resolved: dict[str, Any], choices: dict[str, Any]) -> dict[str, Any]:
    """The config a run used, flat: `{"model.optimizer.lr": 0.001, ...}` from the resolved config,
    plus the option chosen in each config group (`{"model": "mlp", "debug": None}`), so readers
    compare the values runs used, not only what their command lines said. Values that are not
    short plain data are kept as (shortened) text."""
    flat: dict[str, Any] = {str(k): v for k, v in choices.items()}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
            return
        text = json.dumps(node, default=str)
        flat[prefix[:-1]] = node if len(text) <= MAX_CONFIG_VALUE else text[:MAX_CONFIG_VALUE - 1] + "…"

    walk(resolved, "")
    return flat


def progress(summary: dict[str, Any], *, epochs_completed: int, global_step: int,
             last_metrics: dict[str, float], best_checkpoint: str | None,
             best_metric: float | None) -> None:
    """Record the progress of a running run (after each epoch, and after fitting)."""
    summary.update(updated_at=now(), epochs_completed=epochs_completed, global_step=global_step,
                   last_metrics=last_metrics, best_checkpoint=best_checkpoint, best_metric=best_metric)


def resumed(old: dict[str, Any], *, run_dir: Path, max_epochs: Any, overrides: list[str],
            resumed_from: dict[str, Any] | None) -> dict[str, Any]:
    """The summary of a resumed run: the old one, status `running`, one more entry in `attempts`.

    `started_at` stays the first start; `attempts` lists every start with its outcome (the last
    attempt's outcome is the top-level status) and `duration_s` adds up the attempts' run times.
    `run_dir` is where the run is now; when the old summary names another (a copy), the attempt
    records it as `copied_from`.
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
                     "pid": os.getpid(), "slurm": slurm_job(), "overrides": overrides,
                     "resumed_from": resumed_from, "git": git})
    if copied_from(old, run_dir):
        attempts[-1]["copied_from"] = old["run_dir"]
    return {**old, "run_dir": str(Path(run_dir).resolve()), "schema": SCHEMA_VERSION, "status": "running",
            "ended_at": None, "duration_s": None,
            "error": None, "max_epochs": max_epochs, "test_metrics": {}, "host": os.uname().nodename,
            "pid": os.getpid(), "slurm": slurm_job(), "versions": package_versions(), "git": git,
            "attempts": attempts}


def copied_from(old: dict[str, Any], run_dir: str | Path) -> str | None:
    """The run dir that `old` (a summary read in `run_dir`) says the run lives in, when that is
    not `run_dir`: the run was copied or moved there. None for the run's own dir (also when
    reached by another path) and for summaries that do not say."""
    recorded = old.get("run_dir")
    if not isinstance(recorded, str) or not recorded:
        return None
    try:
        if os.path.samefile(recorded, run_dir):
            return None
    except OSError:  # gone, or not reachable from here: not this dir
        pass
    return recorded


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
    """The run's summary, or None when the file is missing, damaged or not to be read (a FIFO,
    a device or a link out of the run dir, over the size cap: see dlops.rundir.safe_read)."""
    try:
        raw = safe_read.read_inside(Path(run_dir) / layout.SUMMARY, Path(run_dir), safe_read.MAX_JSON)
        data = None if raw is None else json.loads(raw)
    except (safe_read.Unreadable, OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def slurm_job() -> dict[str, Any] | None:
    """The SLURM job this process runs in (`12` or, in a job array, `12_3`), how many times SLURM
    started it before and its cluster, so that a reader elsewhere can ask SLURM whether this
    attempt still runs (`liveness.writer_state`); None outside SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    restarts = os.environ.get("SLURM_RESTART_COUNT") or "0"
    return {"job": f"{array}_{task}" if array and task else job,
            "restarts": int(restarts) if restarts.isdigit() else 0,
            "cluster": os.environ.get("SLURM_CLUSTER_NAME")}


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
        commit, repo = git("rev-parse", "HEAD", "--show-toplevel").stdout.splitlines()
        return {"commit": commit, "dirty": bool(git("status", "--porcelain").stdout.strip()), "repo": repo}
    except (OSError, subprocess.SubprocessError):
        return None


def _first_attempt(old: dict[str, Any]) -> dict[str, Any]:
    return {"started_at": old.get("started_at"), "started_at_unix": old.get("started_at_unix"),
            "host": old.get("host"), "pid": old.get("pid"), "slurm": old.get("slurm"),
            "overrides": old.get("overrides", []),
            "resumed_from": None, "git": old.get("git")}
