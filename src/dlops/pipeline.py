"""`train(cfg)`: the one place that wires data, model, loggers, callbacks and trainer together."""

import errno
import logging
import math
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dlops.errors import ConfigError, DivergedError, Interrupted
from dlops.runs import signals
from dlops.runs.ddp import clean_process_state, is_rank_zero, prepare_relaunch
from dlops.runs.summary import git_commit, now, package_versions, write_summary
from dlops.validate import validate

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | None:
    """Train and test one run in `cfg.paths.output_dir`; return the best monitored value.

    Every end is recorded in the run's `summary.json`. A bad input ends a single run with one
    readable message and exit code 1 (set HYDRA_FULL_ERROR=1 for the traceback); inside a
    sweep the failure is recorded and the sweep goes on with the next job. SIGINT/SIGTERM stop
    the run after the current batch with `last.ckpt` saved (exit code 130/143). With `resume=`,
    the run continues in its own directory (see dlops.runs.resume).
    """
    run_dir = Path(cfg.paths.output_dir)
    if not is_rank_zero():  # a DDP rank > 0, started by Lightning or SLURM: rank 0 records the run
        return train_other_rank(cfg, run_dir)
    checkpoint, summary = None, None
    if cfg.get("resume"):
        from dlops.runs.resume import plan

        try:
            resumed = plan(cfg, run_dir)
        except ConfigError as exc:  # nothing was written: the run's files stay as they were
            return refuse(exc, run_dir)
        if resumed.done:
            log.info(resumed.done)
            return resumed.objective
        cfg, checkpoint, summary = resumed.cfg, resumed.checkpoint, resumed.summary
    elif (run_dir / "summary.json").exists():  # e.g. hydra.run.dir=<an old run>: never overwrite it
        return refuse(ConfigError(f"{run_dir} already holds a run; continue it with resume={run_dir} "
                                  "or choose another hydra.run.dir"), run_dir)
    summary = summary or start_summary(cfg, run_dir)
    write_summary(run_dir, summary)
    signals.install()
    try:
        validate(cfg)
        with clean_process_state():
            objective = fit_and_test(cfg, run_dir, summary, checkpoint)
    except BaseException as exc:  # noqa: BLE001 - every end of a run must be recorded
        return record_failure(exc, run_dir, summary)
    finally:
        signals.restore()
    summary.update(status="completed", ended_at=now(), duration_s=_duration(summary))
    write_summary(run_dir, summary)
    report(summary, run_dir)
    return objective


def train_other_rank(cfg: DictConfig, run_dir: Path) -> None:
    """A DDP rank > 0: fit beside rank 0, from the same checkpoint when resuming; rank 0 records."""
    checkpoint = None
    if cfg.get("resume"):
        from dlops.runs.resume import resumed_config

        cfg, checkpoint = resumed_config(cfg, run_dir)
    try:
        fit_and_test(cfg, run_dir, start_summary(cfg, run_dir), checkpoint)
    except Interrupted:
        return None  # every rank stopped at the same batch; rank 0 says so
    except BaseException as exc:  # noqa: BLE001
        if user_message(exc) is None:
            raise  # unexpected, maybe in this rank only: Lightning then stops every rank
        log.error("rank > 0 stopped, rank 0 records why: %s", user_message(exc))
    return None  # exit 0, or Lightning would kill rank 0 before it records the run


def fit_and_test(cfg: DictConfig, run_dir: Path, summary: dict[str, Any],
                 checkpoint: str | None = None) -> float | None:
    """Instantiate everything from the config, fit (from `checkpoint` when resuming), test the
    best checkpoint, fill `summary`."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from dlops.callbacks.resumable import Resumable
    from dlops.callbacks.run_status import RunStatus
    from dlops.overhead import skip_gpu_probes, trainer_speedups
    from dlops.runs.checkpoints import AtomicCheckpointIO
    from dlops.runs.curves import METRICS_CSV, plot_learning_curves
    from dlops.tracking.loggers import finish, log_config, record_trackers

    skip_gpu_probes()
    quiet_lightning()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.datamodule, seed=cfg.seed)
    datamodule.prepare_data()
    datamodule.setup("fit")
    train_images = datamodule.splits["train"].images.float() / 255
    model = instantiate(
        cfg.model,
        num_classes=datamodule.num_classes,
        input_shape=datamodule.input_shape,
        class_names=datamodule.class_names,
        class_weights=datamodule.class_weights,
        mean=train_images.mean().item(),
        std=train_images.std().item(),
        _recursive_=False,
    )
    summary["parameters"] = sum(p.numel() for p in model.parameters())
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if not (cfg.model.get("scheduler") and loggers):  # nothing for a learning-rate monitor to log
        callbacks = [c for c in callbacks if type(c).__name__ != "LearningRateMonitor"]
    # last.ckpt first, then summary.json: the summary's progress never runs ahead of the checkpoint
    callbacks.append(Resumable(run_dir / "checkpoints", cfg.get("checkpoint_every_n_steps")))
    callbacks.append(RunStatus(str(run_dir), summary))
    callbacks, speedups = trainer_speedups(cfg.trainer, callbacks)
    status, objective = "failed", None
    try:
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                              plugins=[AtomicCheckpointIO()], **speedups)
        prepare_relaunch(trainer, run_dir)
        record_trackers(loggers, summary)
        log_config(loggers, cfg, parameters=summary["parameters"], seed=cfg.seed, tags=summary["tags"])
        objective = fit_then_test(cfg, trainer, model, datamodule, run_dir, summary, checkpoint)
        status = "completed"
    except BaseException:
        status = "interrupted" if signals.requested() else "failed"  # what the trackers' runs end as
        raise
    finally:
        finish(loggers, status, objective)
    if (run_dir / METRICS_CSV).is_file() and is_rank_zero():
        plot_learning_curves(run_dir)
    return objective


def _not_an_advert(record: logging.LogRecord) -> bool:
    return "Tip: For seamless cloud logging" not in record.getMessage()


def quiet_lightning() -> None:
    """Silence two lines Lightning prints in every run that say nothing about it: an advert for
    its cloud logger and a deprecation inside Lightning itself."""
    import warnings

    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_not_an_advert)  # once
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def fit_then_test(cfg: DictConfig, trainer: Any, model: Any, datamodule: Any, run_dir: Path,
                  summary: dict[str, Any], checkpoint: str | None = None) -> float | None:
    """Fit (continuing from `checkpoint` if given), test the best checkpoint, fill `summary`."""
    from dlops.callbacks.run_status import best_checkpoint, scalar_metrics

    trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    best_path, best_score = best_checkpoint(trainer)
    summary.update(
        epochs_completed=trainer.current_epoch,
        global_step=trainer.global_step,
        last_metrics=scalar_metrics(trainer.callback_metrics),
        best_checkpoint=_relative(best_path, run_dir),
        best_metric=best_score,
    )
    if signals.requested():  # asked to stop during the last validation: last.ckpt is saved
        raise Interrupted(signals.requested())
    if cfg.test:
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None,
                               weights_only=True, verbose=False)
        summary["test_metrics"] = scalar_metrics(results[0]) if results else {}
    if best_score is not None:
        return best_score
    last = summary["last_metrics"].get(cfg.monitor)
    return None if last is None else float(last)


def start_summary(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The summary a run starts with: who, what, where, and status `running`."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    return {
        "schema": 1,
        "status": "running",
        "name": cfg.get("name"),
        "tags": list(cfg.get("tags") or []),
        "run_dir": str(run_dir.resolve()),
        "job_num": hydra.job.num if hydra and hydra.mode == RunMode.MULTIRUN else None,
        "overrides": list(hydra.overrides.task) if hydra else [],
        "started_at": now(),
        "started_at_unix": time.time(),
        "ended_at": None,
        "duration_s": None,
        "seed": cfg.get("seed"),
        "monitor": cfg.get("monitor"),
        "mode": cfg.get("mode"),
        "max_epochs": OmegaConf.select(cfg, "trainer.max_epochs"),
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


def record_failure(exc: BaseException, run_dir: Path, summary: dict[str, Any]) -> float:
    """Write the failed summary; stop a single run with one message, or let a sweep go on.

    An interrupt stops a sweep too, with exit code 128 + the signal number (130 for Ctrl-C,
    143 for SIGTERM), and the message says how to continue.
    """
    signum = exc.signum if isinstance(exc, Interrupted) else signals.requested()
    if isinstance(exc, KeyboardInterrupt) or (signum and isinstance(exc, SystemExit)):
        signum = signum or signal.SIGINT
    elif not isinstance(exc, Interrupted):
        signum = None
    message = user_message(exc) if signum is None else interrupt_message(exc, signum)
    status = ("diverged" if isinstance(exc, DivergedError) else "interrupted" if signum else "failed")
    error = {"type": type(exc).__name__, "message": message or str(exc),
             "traceback": "traceback.txt"}
    (run_dir / "traceback.txt").write_text("".join(traceback.format_exception(exc)))
    summary.update(status=status, ended_at=now(), duration_s=_duration(summary), error=error)
    try:
        write_summary(run_dir, summary)
    except OSError as write_error:  # e.g. the disk is full: still say what happened
        log.error("could not update %s: %s", run_dir / "summary.json", write_error)
    text = message or f"{error['type']}: {exc} (traceback in {run_dir / 'traceback.txt'})"
    if status != "diverged" and (run_dir / "checkpoints" / "last.ckpt").is_file():
        text += f"\nContinue it with: python train.py resume={run_dir}"
    log.error("run %s in %s: %s", status, run_dir, text)
    if os.environ.get("HYDRA_FULL_ERROR") == "1" and not signum:
        raise exc
    if signum:
        raise SystemExit(128 + signum)  # a sweep stops too: the user asked to stop
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return math.nan  # the sweep records the failure and carries on
    raise SystemExit(1)


def refuse(exc: ConfigError, run_dir: Path) -> float:
    """Report why the run in `run_dir` cannot start or continue, writing nothing into it."""
    log.error("cannot run in %s: %s", run_dir, exc)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        from dlops.runs.sweep import REFUSED

        REFUSED[str(run_dir.resolve())] = " ".join(str(exc).split())[:300]  # the sweep fails with it
        return math.nan
    raise SystemExit(1)


def interrupt_message(exc: BaseException, signum: int) -> str:
    """What an interrupted run tells the user."""
    name = signal.Signals(signum).name
    if isinstance(exc, Interrupted):
        return f"stopped by {name} at a safe point; checkpoints/last.ckpt holds the state"
    return f"stopped at once by a repeated {name}; checkpoints/last.ckpt holds the last saved state"


def user_message(exc: BaseException) -> str | None:
    """The readable message of an error caused by the input, or None for a bug."""
    from hydra.errors import InstantiationException

    cause = exc
    while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, ConfigError | DivergedError):
        return str(cause)
    if isinstance(exc, InstantiationException):  # e.g. a misspelt argument of a _target_
        return f"the config could not be instantiated: {exc}"
    if type(cause).__name__ == "MisconfigurationException":  # Lightning's bad-setting error
        return f"Lightning rejected the setting: {cause}"
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device while writing {cause.filename}; files written "
                "before are intact (checkpoints are replaced only once fully written). Free some space.")
    if isinstance(cause, OSError) and cause.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {cause.filename}: {cause.strerror}. Make it writable or run elsewhere."
    if isinstance(cause, RuntimeError) and "Error(s) in loading state_dict" in str(cause):
        return f"the checkpoint does not fit this model: {str(cause).splitlines()[0]}"
    return None


def report(summary: dict[str, Any], run_dir: Path) -> None:
    """Log the run's outcome in a few lines."""
    metrics = {**summary["last_metrics"], **summary["test_metrics"]}
    shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.split("_")[0] in ("val", "test"))
    log.info("completed in %.1fs after %s epochs: %s", summary["duration_s"],
             summary["epochs_completed"], shown)
    log.info("best %s=%s, checkpoint %s", summary["monitor"], summary["best_metric"],
             summary["best_checkpoint"])
    log.info("run dir: %s", run_dir)


def _duration(summary: dict[str, Any]) -> float:
    """Seconds of running: since this attempt started, plus earlier attempts of a resumed run."""
    attempts = summary.get("attempts") or [summary]
    earlier = sum(a.get("duration_s") or 0.0 for a in attempts[:-1])
    return round(earlier + time.time() - attempts[-1]["started_at_unix"], 3)


def _relative(path: str | None, run_dir: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path)
