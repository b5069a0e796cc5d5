"""`refused.json` in a sweep dir: the jobs whose resume was refused, and why.

A refused resume writes nothing into its run dir, so its summary cannot say it was tried again;
the refusal goes into the sweep dir instead, where the sweep summary finds it whichever process
(joblib worker, SLURM job) refused. Updated under an exclusive lock: jobs may refuse at once.
"""

import fcntl
import json
import os
from pathlib import Path

from dlops.rundir import layout


def note(sweep_dir: str | Path, run_dir: str | Path, reason: str) -> None:
    """Add `run_dir` and the reason it was refused to the sweep's `refused.json`."""
    path = Path(sweep_dir) / layout.REFUSED
    with open(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            found = json.loads(file.read() or "{}")
        except ValueError:
            found = {}
        found[str(Path(run_dir).resolve())] = reason
        file.seek(0)
        file.truncate()
        file.write(json.dumps(found, indent=1) + "\n")


def read(sweep_dir: str | Path) -> dict[str, str]:
    """Refused run dirs and their reasons (empty when none was refused)."""
    try:
        found = json.loads((Path(sweep_dir) / layout.REFUSED).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def clear(sweep_dir: str | Path) -> None:
    """Forget earlier refusals: a new multirun in the same sweep dir starts with none."""
    (Path(sweep_dir) / layout.REFUSED).unlink(missing_ok=True)
