"""`train(cfg)`: the one place that wires data, model, loggers, callbacks and trainer together."""

import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dlops.errors import ConfigError, Interrupted
from dlops.lifecycle import signals
from dlops.lifecycle.ddp import clean_process_state, is_rank_zero, prepare_relaunch
from dlops.lifecycle.failures import record_failure, refuse, user_message
from dlops.rundir import layout
from dlops.rundir import summary as run_summary
from dlops.validate import validate

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | None:
    """Train and test one run in `cfg.paths.output_dir`; return the best monitored value.

    Every end is recorded in the run's `summary.json`. A bad input ends a single run with one
    readable message and exit code 1 (set HYDRA_FULL_ERROR=1 for the traceback); inside a
    sweep the failure is recorded and the sweep goes on with the next job. SIGINT/SIGTERM stop
    the run after the current batch with `last.ckpt` saved (exit code 130/143). With `resume=`,
    the run continues in its own directory (see dlops.lifecycle.resume).
    """
    run_dir = Path(cfg.paths.output_dir)
    if not is_rank_zero():  # a DDP rank > 0, started by Lightning or SLURM: rank 0 records the run
        return train_other_rank(cfg, run_dir)
    from dlops.rundir import lock

    try:  # one writer per run dir, for the whole run (see dlops.rundir.lock)
        acquired = lock.acquire(run_dir)
    except ConfigError as exc:
        return refuse(exc, run_dir, _sweep_dir())
    try:
        return train_locked(cfg, run_dir)
    finally:
        if acquired:
            lock.release(run_dir)


def train_locked(cfg: DictConfig, run_dir: Path) -> float | None:
    """`train` for rank 0, holding the run dir's lock."""
    from dlops.rundir.lock import run_files

    checkpoint, summary = None, None
    if cfg.get("resume"):
        from dlops.lifecycle.resume import plan

        try:
            resumed = plan(cfg, run_dir)
        except ConfigError as exc:  # nothing was written: the run's files stay as they were
            return refuse(exc, run_dir, _sweep_dir())
        if resumed.done:
            log.info(resumed.done)
            return resumed.objective
        cfg, checkpoint, summary = resumed.cfg, resumed.checkpoint, resumed.summary
    elif found := run_files(run_dir):  # e.g. hydra.run.dir=<an old run>: never overwrite it
        text = (f"{run_dir} already holds a run; continue it with resume={run_dir} or choose another "
                "hydra.run.dir" if layout.SUMMARY in found else f"{run_dir} already holds a run's "
                f"files ({', '.join(found)}) but no {layout.SUMMARY} to continue it from; choose another "
                "hydra.run.dir. Nothing in it was changed.")
        return refuse(ConfigError(text), run_dir, _sweep_dir())
    summary = summary or start_summary(cfg, run_dir)
    run_summary.write(run_dir, summary)
    signals.install()
    try:
        validate(cfg)
        with clean_process_state():
            objective = fit_and_test(cfg, run_dir, summary, checkpoint)
    except BaseException as exc:  # noqa: BLE001 - every end of a run must be recorded
        return record_failure(exc, run_dir, summary, signals.requested(), _sweep_dir() is not None)
    finally:
        signals.restore()
    run_summary.ended(summary, "completed")
    if warning := not_finite_warning(summary):  # completed, but its result is no number
        summary.setdefault("warnings", []).append(warning)
        log.warning(warning)
    run_summary.write(run_dir, summary)
    log_outcome(summary, run_dir)
    return objective


def not_finite_warning(summary: dict[str, Any]) -> str | None:
    """What to say when a run completed but its monitored metric is NaN or infinite."""
    monitor = summary.get("monitor")
    values = [summary.get("best_metric"), (summary.get("last_metrics") or {}).get(monitor)]
    bad = [v for v in values if isinstance(v, float) and not math.isfinite(v)]
    if not bad:
        return None
    return (f"the run completed, but its monitored metric {monitor} is {bad[0]}: its result is not "
            "a number (summary.json writes null and lists it in non_finite). Lower "
            "model.optimizer.lr or check the data.")


def _sweep_dir() -> Path | None:
    """The sweep dir when this job is one of a multirun, else None."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir)
    return None


def train_other_rank(cfg: DictConfig, run_dir: Path) -> None:
    """A DDP rank > 0: fit beside rank 0, from the same checkpoint when resuming; rank 0 records."""
    checkpoint = None
    if cfg.get("resume"):
        from dlops.lifecycle.resume import resumed_config

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

    from dlops.build import build_datamodule, build_model
    from dlops.callbacks.progress import MonitorCheck, SummaryProgress
    from dlops.callbacks.pruning import pruning_callbacks
    from dlops.callbacks.resumable import Resumable
    from dlops.lifecycle.checkpoints import AtomicCheckpointIO
    from dlops.overhead import skip_gpu_probes, trainer_speedups
    from dlops.readers.curves import METRICS_CSV, plot_learning_curves
    from dlops.tracking.loggers import finish, log_config, record_trackers

    skip_gpu_probes()
    quiet_lightning()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    summary["parameters"] = sum(p.numel() for p in model.parameters())
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    # the monitor logs even a constant learning rate: kept where the model config sets a scheduler
    if not (cfg.model.get("scheduler") and loggers):
        callbacks = [c for c in callbacks if type(c).__name__ != "LearningRateMonitor"]
    # first of the checks at an epoch's end: an unknown monitor stops the run with dlops' message
    callbacks.insert(0, MonitorCheck(cfg.monitor))
    # last.ckpt first, then summary.json: the summary's progress never runs ahead of the checkpoint
    callbacks.append(Resumable(run_dir / "checkpoints", cfg.get("checkpoint_every_n_steps")))
    callbacks.append(SummaryProgress(str(run_dir), summary))
    callbacks += pruning_callbacks(cfg)  # a trial of dlops' Optuna sweeper: after SummaryProgress
    callbacks, speedups = trainer_speedups(cfg.trainer, callbacks)
    status, objective = "failed", None
    try:
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                              plugins=[AtomicCheckpointIO()], **speedups)
        prepare_relaunch(trainer, run_dir)
        record_trackers(loggers, summary)
        log_config(loggers, cfg, parameters=summary["parameters"], seed=cfg.seed, tags=summary["tags"])
        objective = fit_then_test(cfg, trainer, model, datamodule, run_dir, summary, checkpoint)
        if cfg.get("export") and is_rank_zero():  # export=onnx: RUN/export/, verified against torch
            from dlops.inference.export import export_after_training

            export_after_training(cfg, model, datamodule, run_dir, summary["best_checkpoint"])
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
    from dlops.callbacks.progress import best_checkpoint, scalar_metrics

    trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    best_path, best_score = best_checkpoint(trainer)
    run_summary.progress(summary, epochs_completed=trainer.current_epoch, global_step=trainer.global_step,
                         last_metrics=scalar_metrics(trainer.callback_metrics),
                         best_checkpoint=_relative(best_path, run_dir), best_metric=best_score)
    if signals.requested():  # asked to stop during the last validation: last.ckpt is saved
        raise Interrupted(signals.requested())
    if cfg.test and not _can_test(model, datamodule):
        log.info("test=true, but %s has no test_step or %s no test_dataloader: not tested",
                 type(model).__name__, type(datamodule).__name__)
    elif cfg.test:
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None,
                               weights_only=True, verbose=False)
        summary["test_metrics"] = scalar_metrics(results[0]) if results else {}
    if best_score is not None:
        return best_score
    last = summary["last_metrics"].get(cfg.monitor)
    return None if last is None else float(last)


def _can_test(model: Any, datamodule: Any) -> bool:
    from pytorch_lightning.utilities.model_helpers import is_overridden

    return is_overridden("test_step", model) and is_overridden("test_dataloader", datamodule)


def start_summary(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The summary a run starts with, from its config and Hydra's view of the job."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    return run_summary.new(
        run_dir, name=cfg.get("name"), tags=list(cfg.get("tags") or []),
        job_num=hydra.job.num if hydra and hydra.mode == RunMode.MULTIRUN else None,
        overrides=list(hydra.overrides.task) if hydra else [], seed=cfg.get("seed"),
        monitor=cfg.get("monitor"), mode=cfg.get("mode"),
        max_epochs=OmegaConf.select(cfg, "trainer.max_epochs"))


def log_outcome(summary: dict[str, Any], run_dir: Path) -> None:
    """Log the run's outcome in a few lines."""
    metrics = {**summary["last_metrics"], **summary["test_metrics"]}
    shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.split("_")[0] in ("val", "test"))
    log.info("completed in %.1fs after %s epochs: %s", summary["duration_s"],
             summary["epochs_completed"], shown)
    best = summary["best_metric"]
    log.info("best %s=%s, checkpoint %s", summary["monitor"], best if best is None else f"{best:.4f}",
             summary["best_checkpoint"])
    log.info("run dir: %s", run_dir)


def _relative(path: str | None, run_dir: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path)
