"""One writer per run dir: an exclusive `flock` on `RUN_DIR/.dlops.lock`, held for the whole run
(and one sweep per sweep dir, by the same lock in the sweep dir, held by the process that sweeps).

The kernel drops the lock when its process ends however it ends (a crash, SIGKILL), so a dead
holder never blocks a later `resume=`; nothing needs cleaning up. Standard library only.
On NFS, Linux turns `flock` into a byte-range lock that the server enforces across machines.
"""

import fcntl
import os
from pathlib import Path

from dlops.errors import ConfigError
from dlops.rundir import layout

LOCK_FILE = layout.LOCK
_held: dict[str, int] = {}  # resolved run dir -> open lock file of this process


class RunDirBusy(ConfigError):
    """Another process holds the run dir's lock."""


def holder(run_dir: str | Path) -> str:
    """Who holds (or last held) the lock, as the holder wrote it: `pid N on HOST`."""
    try:
        with open(Path(run_dir) / LOCK_FILE, errors="replace") as file:
            text = " ".join(file.read(200).split())
    except OSError:
        text = ""
    return text or "a process that has not said who it is yet"


def acquire(run_dir: str | Path, kind: str = "run dir") -> bool:
    """Take the run dir's (or sweep dir's: `kind`) lock for this process; False if this process
    holds it already.

    Raise RunDirBusy at once (no waiting) when another process holds it.
    """
    key = os.path.realpath(run_dir)
    if key in _held:
        return False
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:  # e.g. a read-only file system: no run can write here
        raise ConfigError(f"cannot write into {run_dir}: {exc.strerror}. A run needs its run dir "
                          "writable (to resume it too): make it writable or copy the run elsewhere "
                          "and resume the copy.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirBusy(
            f"{run_dir} is in use by another process ({holder(run_dir)}); one process writes a "
            f"{kind} at a time. Wait for it to end, or stop it (Ctrl-C or kill PID) and resume "
            "once it has.") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode())
    _held[key] = fd
    return True


def release(run_dir: str | Path) -> None:
    """Let go of the run dir's lock (the file stays: removing it would race with a new holder)."""
    fd = _held.pop(os.path.realpath(run_dir), None)
    if fd is not None:
        os.close(fd)


# what a run leaves in its dir besides .hydra/ (which Hydra writes before the run starts)
RUN_FILES = (layout.SUMMARY, layout.CHECKPOINTS, str(layout.METRICS_CSV.parent), layout.PLOTS,
             "tensorboard", "wandb", "mlruns", layout.TRACEBACK)


def run_files(run_dir: str | Path) -> list[str]:
    """The files of an earlier run in `run_dir` (a log with lines in it counts)."""
    run_dir = Path(run_dir)
    found = [name for name in RUN_FILES if os.path.lexists(run_dir / name)]
    log_file = run_dir / layout.LOG
    if log_file.is_file() and log_file.stat().st_size > 0:
        found.append(layout.LOG)
    return found


def existing_run(run_dir: str | Path) -> str | None:
    """Why a new run must not start in `run_dir` (it holds an earlier run), or None."""
    found = run_files(run_dir)
    if not found:
        return None
    if layout.SUMMARY in found:
        return (f"{run_dir} already holds a run; continue it with resume={run_dir} or choose another "
                "hydra.run.dir")
    return (f"{run_dir} already holds a run's files ({', '.join(found)}) but no {layout.SUMMARY} to "
            "continue it from; choose another hydra.run.dir. Nothing in it was changed.")
