"""How a run that did not complete ends: its status, the one message a person reads, and what
the process does next (exit code, or let a sweep go on).

`decide` is a pure function of the exception and the circumstances; `record_failure` and `refuse`
carry the decision out (summary.json, traceback.txt, the log, the exit).
"""

import errno
import logging
import math
import os
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlops.errors import ConfigError, DivergedError, Interrupted, Pruned
from dlops.rundir import layout, refused
from dlops.rundir import summary as run_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """What becomes of a run that raised."""

    status: str  # failed, interrupted, diverged or pruned
    message: str | None  # for a person; None for a bug (the traceback file says more)
    signum: int | None  # the stopping signal, for interrupts
    exit_code: int | None  # the process exits with it; None: return NaN, the sweep goes on
    reraise: bool  # HYDRA_FULL_ERROR=1 asks for the traceback


def decide(exc: BaseException, requested: int | None, multirun: bool, full_error: bool) -> Decision:
    """Decide the outcome of `exc`; `requested` is a signal that asked the run to stop, if any.

    An interrupt stops a sweep too, with exit code 128 + the signal number (130 for Ctrl-C, 143
    for SIGTERM). Any other failure ends a single run with exit code 1 and lets a sweep go on.
    """
    signum = exc.signum if isinstance(exc, Interrupted) else requested
    if isinstance(exc, KeyboardInterrupt) or (signum and isinstance(exc, SystemExit)):
        signum = signum or signal.SIGINT
    elif not isinstance(exc, Interrupted):
        signum = None
    if signum:
        return Decision("interrupted", interrupt_message(exc, signum), signum, 128 + signum, False)
    status = "diverged" if _caused_by(exc, DivergedError) else "pruned" if _caused_by(exc, Pruned) \
        else "failed"
    exit_code = None if multirun else 1
    return Decision(status, user_message(exc), None, exit_code, full_error)


def interrupt_message(exc: BaseException, signum: int) -> str:
    """What an interrupted run tells the user."""
    name = signal.Signals(signum).name
    if isinstance(exc, Interrupted):
        return f"stopped by {name} at a safe point; checkpoints/last.ckpt holds the state"
    return f"stopped at once by a repeated {name}; checkpoints/last.ckpt holds the last saved state"


def user_message(exc: BaseException) -> str | None:
    """The readable message of an error caused by the input, or None for a bug."""
    from hydra.errors import InstantiationException

    from dlops.extras import for_missing_module

    for link in causes(exc):  # e.g. a ConfigError raised by `${data:...}` while instantiating
        if isinstance(link, ConfigError | DivergedError | Pruned):
            return str(link)
        if isinstance(link, ModuleNotFoundError) and (text := for_missing_module(link)):
            return text  # a module that an extra of dlops brings: the install line
    cause = causes(exc)[-1] if isinstance(exc, InstantiationException) else exc
    if isinstance(exc, InstantiationException) and not isinstance(cause, OSError):
        return f"the config could not be instantiated: {exc}"  # e.g. a misspelt argument
    if type(cause).__name__ == "MisconfigurationException":  # Lightning's bad-setting error
        return f"Lightning rejected the setting: {cause}"
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device while writing {cause.filename or 'a file'}; files "
                "written before are intact (checkpoints are replaced only once fully written). "
                "Free some space.")
    if isinstance(cause, OSError) and cause.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {cause.filename}: {cause.strerror}. Make it writable or run elsewhere."
    if isinstance(cause, RuntimeError) and "Error(s) in loading state_dict" in str(cause):
        return f"the checkpoint does not fit this model: {str(cause).splitlines()[0]}"
    return None


def causes(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    return chain


def _caused_by(exc: BaseException, kind: type) -> bool:
    return any(isinstance(link, kind) for link in causes(exc))


def record_failure(exc: BaseException, run_dir: Path, summary: dict[str, Any],
                   requested: int | None, multirun: bool) -> float:
    """Carry out `decide`: traceback.txt, summary.json, one log line; then exit, or return NaN
    so that a sweep records the failure and carries on."""
    decision = decide(exc, requested, multirun, os.environ.get("HYDRA_FULL_ERROR") == "1")
    error = {"type": type(exc).__name__, "message": decision.message or str(exc),
             "traceback": layout.TRACEBACK}
    try:
        (run_dir / layout.TRACEBACK).write_text("".join(traceback.format_exception(exc)))
        run_summary.ended(summary, decision.status, error)
        run_summary.write(run_dir, summary)
    except OSError as write_error:  # e.g. the disk is full: still say what happened
        log.error("could not record the run's end in %s: %s", run_dir, write_error)
    text = decision.message or f"{error['type']}: {exc} (traceback in {run_dir / layout.TRACEBACK})"
    if decision.status not in ("diverged", "pruned") and (run_dir / layout.LAST_CHECKPOINT).is_file():
        text += f"\nContinue it with: {continue_command(run_dir)}"
    log.error("run %s in %s: %s", decision.status, run_dir, text)
    if decision.reraise:
        raise exc
    if decision.exit_code is not None:
        raise SystemExit(decision.exit_code)
    return math.nan


def continue_command(run_dir: Path) -> str:
    """The command that resumes `run_dir`, quoted for the shell (`resume=` reads the path as is)."""
    import shlex

    from dlops.lifecycle import argv

    return f"{argv.COMMAND} {shlex.quote(f'resume={run_dir}')}"


def refuse(exc: ConfigError, run_dir: Path, sweep_dir: Path | None) -> float:
    """Report why the run in `run_dir` cannot start or continue, writing nothing into it; inside a
    sweep, note it in the sweep dir (any worker process may be the one refusing) and go on."""
    log.error("cannot run in %s: %s", run_dir, exc)
    if sweep_dir is None:
        raise SystemExit(1)
    refused.note(sweep_dir, run_dir, " ".join(str(exc).split())[:300])
    return math.nan
