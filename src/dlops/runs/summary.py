"""`summary.json`: one file per run dir that says what the run is, how it went and where its results are.

Written atomically (temp file + rename) so a reader never sees half a file.
"""

import contextlib
import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

SUMMARY_FILE = "summary.json"
SCHEMA_VERSION = 1
STATUSES = ("running", "completed", "failed", "interrupted", "diverged")
PACKAGES = ("dlops", "torch", "torchvision", "pytorch-lightning", "torchmetrics", "hydra-core",
            "omegaconf", "wandb", "tensorboard")


def now() -> str:
    """The current time as an ISO-8601 string with time zone."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write strict JSON to a temp file beside `path`, then rename it over `path`.

    NaN and infinities, which strict parsers (browsers, jq) reject, are written as null; a dict
    then lists where they were in `non_finite` (see dlops.runs.strict_json). The file gets the
    permissions the umask gives a new file, as `open` would (mkstemp makes it 0600).
    """
    from dlops.runs.strict_json import file_mode, finite_only

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w") as file:
            json.dump(finite_only(data), file, indent=2, default=str, allow_nan=False)
            file.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a failed write() names no file: say which one
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> None:
    """Atomically (re)write `run_dir/summary.json`."""
    write_json_atomic(Path(run_dir) / SUMMARY_FILE, summary)


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's summary, or None when the file is missing or unreadable."""
    try:
        return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide a run's results."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def git_commit(cwd: str | Path) -> dict[str, Any] | None:
    """The commit of the code in `cwd` and whether it had uncommitted changes; None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None
