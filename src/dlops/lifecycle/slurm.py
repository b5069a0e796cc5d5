"""dlops' side of a sweep on SLURM (`hydra/launcher=submitit_slurm`, see hydra_plugins.dlops_slurm_launcher).

In the job: the time-limit signal (submitit's `--signal=USR2@signal_delay_s`) asks the run to stop
at the next safe point like SIGTERM (`last.ckpt` saved, `interrupted` recorded); the job then
requeues itself, and the requeued job resumes in the same run dir. In the sweep: a job that SLURM
ended without a result (scancel, time limit, out of memory, a crashed rank) is recorded in its run
dir, so that the sweep summary lists it.

Light on purpose: no torch.
"""

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType
from typing import Any

from omegaconf import OmegaConf

from dlops.lifecycle import signals
from dlops.rundir import layout
from dlops.rundir import summary as run_summary

log = logging.getLogger(__name__)
TIME_LIMIT_SIGNAL = signal.SIGUSR2  # submitit's: `--signal=USR2@<signal_delay_s>`
# SLURM states of a job that ended while its run may not have recorded an end
STOPPED = ("CANCELLED", "TIMEOUT", "PREEMPTED", "DEADLINE", "REQUEUED", "NODE_FAIL")
_signalled: list[int] = []


def restarts() -> int:
    """How many times SLURM has started this job before (a requeued job runs again)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def job_id() -> str:
    """This job's id as scontrol knows it: `ARRAY_TASK` for a task of a job array."""
    job = run_summary.slurm_job()
    if job is None:
        raise RuntimeError("not in a SLURM job (no SLURM_JOB_ID)")
    return job["job"]


def _on_time_limit(signum: int, frame: FrameType | None) -> None:
    _signalled.append(signum)
    log.warning("SLURM time limit near (%s): stopping after the current batch, saving last.ckpt, "
                "then requeueing", signal.Signals(signum).name)
    signals.request_stop(signum)


def route_time_limit_signal() -> None:
    """Replace submitit's handler (which checkpoints and exits inside the signal handler, in the
    middle of a batch) with a stop request at the next safe point; every rank stops together."""
    signal.signal(TIME_LIMIT_SIGNAL, _on_time_limit)


def requeue_if_signalled(run_dir: Path, limit: int) -> bool:
    """After a run stopped for the time limit: requeue this job (at most `limit` times in all) and
    return True. Rank 0 only; the requeued job resumes from `last.ckpt` (see `resume_override`)."""
    summary = run_summary.read(run_dir) or {}
    if not _signalled or summary.get("status") != "interrupted" or os.environ.get("SLURM_PROCID", "0") != "0":
        return False
    if restarts() >= limit:
        log.error("not requeued: job %s was started %d times already (hydra.launcher.max_num_timeout=%d)",
                  job_id(), restarts() + 1, limit)
        return False
    requeue(job_id())
    log.warning("requeued SLURM job %s: it resumes %s from checkpoints/last.ckpt", job_id(), run_dir)
    return True


def requeue(job: str) -> None:
    """Requeue `job` (the sweep's launcher lets it start again at once: `release_requeued`)."""
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)


def release_requeued(array_job: str) -> None:
    """Let the requeued jobs of `array_job` start again at once: SLURM holds a requeued job until
    its BeginTime, which it sets 120 s ahead (22.05)."""
    try:
        held = subprocess.run(["squeue", "-h", "-j", array_job, "-t", "PD", "-o", "%i %r"],
                              capture_output=True, text=True, timeout=30).stdout.split("\n")
        for job in [line.split()[0] for line in held if line.endswith(" BeginTime")]:
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:  # the job then starts 2 minutes later
        log.warning("could not release requeued jobs of %s: %s", array_job, exc)


def resume_override(overrides: list[str], sweep_dir: str) -> list[str]:
    """A requeued job (time limit, `scontrol requeue`, preemption) continues its run: `resume=`."""
    if restarts() == 0 or any(o.split("=", 1)[0].lstrip("+") == "resume" for o in overrides):
        return overrides
    return [*overrides, f"resume={sweep_dir}"]


def listed(job: str) -> bool:
    """Whether SLURM still lists `job` (or a task of job array `job`): pending, running or
    completing. sacct, which submitit asks, may say NODE_FAIL of a job that SLURM has requeued."""
    try:
        return bool(subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True,
                                   text=True, timeout=30).stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        return False


def wait_until_gone(job: str, timeout: float = 45) -> None:
    """Wait while SLURM still lists `job` (a cancelled job's processes get KillWait, 30 s, to end),
    so that a run that records its own end does so before the sweep looks."""
    end = time.time() + timeout
    while time.time() < end and listed(job):
        time.sleep(1)


def end_previous_attempt(run_dir: Path) -> None:
    """In a requeued job (rank 0): a run that still says `running` was this job's previous attempt,
    killed before it could record an end (e.g. on another node, where resume could not tell that
    it is gone): record it `interrupted`, so that the run resumes."""
    summary = run_summary.read(run_dir)
    if restarts() and os.environ.get("SLURM_PROCID", "0") == "0" and summary \
            and summary.get("status") == "running":
        record_lost_job(run_dir, list(summary.get("overrides") or []), job_id(), "REQUEUED")


def record_lost_job(run_dir: Path, overrides: list[str], job: str, state: str) -> dict[str, Any]:
    """Record in `run_dir` a job that SLURM ended (`state`) before the run recorded its own end:
    `interrupted` when it was stopped (scancel, time limit), `failed` otherwise. A run that
    recorded its end keeps it. Returns the summary."""
    summary = run_summary.read(run_dir)
    if summary and summary.get("status") != "running":
        return summary
    stopped = state.split()[0] in STOPPED
    message = (f"SLURM job {job} ended {state} before the run recorded an end"
               + ("" if summary else " (it never started)") + "; its log is in the sweep's .submitit/.")
    if (run_dir / layout.LAST_CHECKPOINT).is_file() or stopped:
        message += " Continue the sweep with: python train.py -m resume=<sweep dir>"
    summary = summary or {"schema": run_summary.SCHEMA_VERSION, "run_dir": str(run_dir.resolve()),
                          "overrides": overrides, "started_at": None, "duration_s": 0.0,
                          "epochs_completed": 0}
    summary.update(status="interrupted" if stopped else "failed", ended_at=run_summary.now(),
                   error={"type": "SlurmJobEnded", "message": message, "slurm_state": state})
    if not (run_dir / layout.HYDRA_DIR).is_dir():  # the sweep summary lists the job dirs that have one
        (run_dir / layout.HYDRA_DIR).mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(overrides), run_dir / layout.HYDRA_OVERRIDES)
    run_summary.write(run_dir, summary)
    return summary
