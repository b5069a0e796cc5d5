"""`train(cfg)`: the orchestration of one run: lock, resume or start, validate, build, fit and
test, record how it ended. What each step does lives in its own module."""

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dlops.errors import ConfigError, Interrupted
from dlops.lifecycle import signals
from dlops.lifecycle.ddp import clean_process_state, is_rank_zero, prepare_relaunch, train_other_rank
from dlops.lifecycle.failures import record_failure, refuse
from dlops.lifecycle.outcome import record_completed, say_starting
from dlops.lifecycle.sweep import current_sweep_dir
from dlops.rundir import lock
from dlops.rundir import summary as run_summary
from dlops.rundir.lock import existing_run
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
        return train_other_rank(cfg, run_dir)  # see dlops.lifecycle.ddp
    try:  # one writer per run dir, for the whole run (see dlops.rundir.lock)
        acquired = lock.acquire(run_dir)
    except ConfigError as exc:
        return refuse(exc, run_dir, current_sweep_dir())
    try:
        return train_locked(cfg, run_dir)
    finally:
        if acquired:
            lock.release(run_dir)


def train_locked(cfg: DictConfig, run_dir: Path) -> float | None:
    """`train` for rank 0, holding the run dir's lock."""
    checkpoint, summary = None, None
    if cfg.get("resume"):
        from dlops.lifecycle.resume import plan

        try:
            resumed = plan(cfg, run_dir)  # says "resuming" once it knows there is a run to resume
        except ConfigError as exc:  # nothing was written: the run's files stay as they were
            return refuse(exc, run_dir, current_sweep_dir())
        if resumed.done:
            log.info(resumed.done)
            return resumed.objective
        cfg, checkpoint, summary = resumed.cfg, resumed.checkpoint, resumed.summary
        if summary is None:  # a job of the sweep that had not started: it starts now
            say_starting("starting", run_dir)
    elif problem := existing_run(run_dir):  # e.g. hydra.run.dir=<an old run>: never overwrite it
        return refuse(ConfigError(problem), run_dir, current_sweep_dir())
    else:
        say_starting("starting", run_dir)
    summary = summary or start_summary(cfg, run_dir)
    run_summary.write(run_dir, summary)
    signals.install()
    try:
        validate(cfg)
        with clean_process_state():
            objective = fit_and_test(cfg, run_dir, summary, checkpoint)
    except BaseException as exc:  # noqa: BLE001 - every end of a run must be recorded
        return record_failure(exc, run_dir, summary, signals.requested(), current_sweep_dir() is not None)
    finally:
        signals.restore()
    record_completed(run_dir, summary)
    return objective


def fit_and_test(cfg: DictConfig, run_dir: Path, summary: dict[str, Any],
                 checkpoint: str | None = None) -> float | None:
    """Instantiate everything from the config, fit (from `checkpoint` when resuming), test the
    best checkpoint, fill `summary`."""
    from hydra.utils import instantiate

    from dlops import lightning
    from dlops.build import build_callbacks, build_datamodule, build_model, use_lightning_of
    from dlops.lifecycle.checkpoints import AtomicCheckpointIO
    from dlops.lifecycle.provenance import code_provenance
    from dlops.models.summary import show_model_summary
    from dlops.overhead import skip_gpu_probes, trainer_speedups
    from dlops.quiet import log_interval_within_epoch, quiet_run
    from dlops.readers.curves import METRICS_CSV, plot_learning_curves
    from dlops.rundir.metrics import resolve_mode
    from dlops.tracking.loggers import finish, log_config, log_exports, record_trackers

    skip_gpu_probes()
    # mode=auto becomes min or max from the monitor's name, before anything trains
    summary["mode"] = cfg.mode = resolve_mode(cfg.monitor, cfg.get("mode"))
    summary["lightning"] = use_lightning_of(cfg)  # lightning.pytorch or pytorch_lightning
    quiet_run(bool(cfg.get("verbose")))
    lightning.module().seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    if not cfg.get("verbose") and "log_every_n_steps" not in cfg.trainer:
        log_interval_within_epoch(datamodule)
    model = build_model(cfg, datamodule)
    summary["parameters"] = sum(p.numel() for p in model.parameters())
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if is_rank_zero():  # what only the run's summary and console need (ranks > 0 drop theirs)
        show_model_summary(model)
        summary["code"] = code_provenance(model, datamodule)
        summary["config"] = run_summary.flat_config(resolved, group_choices())
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    callbacks = build_callbacks(cfg, run_dir, summary, loggers)
    callbacks, speedups = trainer_speedups(cfg.trainer, callbacks)
    # what built each hyperparameter that is not plain data (a template-style module's net):
    # stored in checkpoints in its place
    built_from = {node: resolved[node] for node in ("model", "datamodule")}
    status, objective = "failed", None
    try:
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                              plugins=[AtomicCheckpointIO(built_from)], **speedups)
        prepare_relaunch(trainer, run_dir)
        record_trackers(loggers, summary)
        log_config(loggers, resolved, parameters=summary["parameters"], seed=cfg.seed, tags=summary["tags"])
        objective = fit_then_test(cfg, trainer, model, datamodule, run_dir, summary, checkpoint)
        log_profile_reports(trainer.profiler, run_dir)
        if cfg.get("export") and is_rank_zero():  # export=onnx: RUN/export/, verified against torch
            from dlops.inference.export import export_after_training

            best = summary["best_checkpoint"]
            summary["export"] = export_after_training(cfg, model, datamodule, run_dir, best)
            for line in log_exports(cfg, summary, run_dir):  # e.g. the model in the MLflow run
                log.info(line)
        status = "completed"
    except BaseException:
        status = "interrupted" if signals.requested() else "failed"  # what the trackers' runs end as
        raise
    finally:
        finish(loggers, status, objective)
    if (run_dir / METRICS_CSV).is_file() and is_rank_zero():
        plot_learning_curves(run_dir)
    return objective


def fit_then_test(cfg: DictConfig, trainer: Any, model: Any, datamodule: Any, run_dir: Path,
                  summary: dict[str, Any], checkpoint: str | None = None) -> float | None:
    """Fit (continuing from `checkpoint` if given), test the best checkpoint, fill `summary`."""
    from dlops.build import can_test
    from dlops.callbacks.progress import best_checkpoint, scalar_metrics

    trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    best_path, best_score = best_checkpoint(trainer, run_dir)
    run_summary.progress(summary, epochs_completed=trainer.current_epoch, global_step=trainer.global_step,
                         last_metrics=scalar_metrics(trainer.callback_metrics),
                         best_checkpoint=best_path, best_metric=best_score)
    if signals.requested():  # asked to stop during the last validation: last.ckpt is saved
        raise Interrupted(signals.requested())
    if cfg.test and not can_test(model, datamodule):
        log.info("test=true, but %s has no test_step or %s no test_dataloader: not tested",
                 type(model).__name__, type(datamodule).__name__)
    elif cfg.test:
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best_path and str(run_dir / best_path),
                               weights_only=True, verbose=False)
        summary["test_metrics"] = scalar_metrics(results[0]) if results else {}
    if best_score is not None:
        return best_score
    last = summary["last_metrics"].get(cfg.monitor)
    return None if last is None else float(last)


def log_profile_reports(profiler: Any, run_dir: Path) -> None:
    """Say where a profiler configured with a folder and a file name (`debug=profile`) wrote its
    reports: Lightning names them `<stage>-<filename>.txt` and says nothing."""
    folder, name = getattr(profiler, "dirpath", None), getattr(profiler, "filename", None)
    reports = sorted(Path(folder).glob(f"*-{name}*.txt")) if folder and name and is_rank_zero() else []
    if reports:
        shown = [str(p.relative_to(run_dir)) if p.is_relative_to(run_dir) else str(p) for p in reports]
        log.info("profiler reports: %s", ", ".join(shown))


def group_choices() -> dict[str, Any]:
    """The option chosen in each config group of this run (`model: mlp`, `debug: null`)."""
    if not HydraConfig.initialized():
        return {}
    choices = OmegaConf.to_container(HydraConfig.get().runtime.choices)
    return {k: v for k, v in choices.items() if not k.startswith("hydra/")}


def start_summary(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The summary a run starts with, from its config and Hydra's view of the job."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    return run_summary.new(
        run_dir, name=cfg.get("name"), tags=list(cfg.get("tags") or []),
        job_num=hydra.job.num if hydra and hydra.mode == RunMode.MULTIRUN else None,
        overrides=list(hydra.overrides.task) if hydra else [], seed=cfg.get("seed"),
        monitor=cfg.get("monitor"), mode=cfg.get("mode"),
        max_epochs=OmegaConf.select(cfg, "trainer.max_epochs"))
