"""Resume a run or a sweep where it stopped: `python train.py resume=RUN_DIR|SWEEP_DIR|latest`.

Two steps. Before Hydra starts, `hydra_argv` rewrites the command so that Hydra works in the
existing directory: a run gets `hydra.run.dir=RUN_DIR`; a sweep is launched again with its own
overrides and `hydra.sweep.dir=SWEEP_DIR`, so every job lands in the directory it had. Inside each
job, `plan` decides: nothing to do (completed), start (a sweep job that never started), or continue
from `checkpoints/last.ckpt` with the config the run was started with.

Light on purpose: torch is imported only when a checkpoint is read.
"""

import logging
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlops import configs
from dlops.errors import ConfigError
from dlops.lifecycle.argv import (
    TORCHRUN_VARIABLE,
    check_torchrun_run_dir,
    hydra_value,
    is_multirun,
    make_run_dirs,
    swept_keys,
)
from dlops.lifecycle.ddp import is_rank_zero
from dlops.lifecycle.failures import continue_command
from dlops.lifecycle.group_options import quote_numeric_options
from dlops.lifecycle.outcome import say_starting
from dlops.rundir import layout, liveness, lock
from dlops.rundir import summary as run_summary
from dlops.rundir.overrides import is_override
from dlops.rundir.overrides import key as override_key
from dlops.tracking.tracker import ResumePoint

log = logging.getLogger(__name__)
# the only overrides that resume accepts: they extend a run or change how it reports, not what it is
RESUMABLE_KEYS = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "test",
                  "checkpoint_every_n_steps", "verbose")
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
LAST_CHECKPOINT = layout.LAST_CHECKPOINT


def _changes_the_run(key: str) -> bool:
    """Whether an override given with resume= would change what the run is or where it lives."""
    if key in ("hydra.run.dir", "hydra.sweep.dir"):
        return True
    return key not in RESUMABLE_KEYS and not (key == "hydra" or key.startswith(("hydra.", "hydra/")))


def hydra_argv(argv: list[str]) -> list[str]:
    """The command line Hydra gets: with `resume=`, pointed at the run or sweep dir; the run dir
    given on it created (see `make_run_dirs`).

    A bad `resume=` ends the program here with one message and exit code 1, before anything is written.
    """
    torchrun = bool(os.environ.get(TORCHRUN_VARIABLE))
    if not is_rank_zero() and not torchrun:  # a DDP rank > 0 that Lightning started in rank 0's run dir
        return argv
    argv = quote_numeric_options(argv, configs.search_dirs(configs.primary_from_args(argv[1:])))
    try:
        _check_path(Path.cwd(), "the current folder")
        argv = _resume_argv(argv, writer=is_rank_zero())
        if torchrun:
            check_torchrun_run_dir(argv)
    except ConfigError as exc:
        raise SystemExit(f"{Path(argv[0]).name}: error: {exc}") from None
    if is_rank_zero():  # the run dir is rank 0's to create and lock
        make_run_dirs(argv)
    return argv


def _resume_argv(argv: list[str], writer: bool = True) -> list[str]:
    values = [a.split("=", 1)[1] for a in argv[1:] if is_override(a) and override_key(a) == "resume"]
    if not values or values[-1] in ("", "null"):
        return argv
    rest = [a for a in argv[1:] if not (is_override(a) and override_key(a) == "resume")]
    multirun = is_multirun(rest)
    target = Path(values[-1]).expanduser()
    if values[-1] == "latest":
        target = latest(Path("multirun" if multirun else "outputs"))
    target = target.resolve()
    if not target.is_dir():
        raise ConfigError(f"resume={values[-1]}: {target} is not a directory.")
    _check_path(target, f"resume={values[-1]}")
    refused = [a for a in rest if is_override(a) and _changes_the_run(override_key(a))]
    if refused:
        raise ConfigError(
            f"resume continues a run with the config it was started with, so {' '.join(refused)} "
            f"cannot be given with it. Allowed with resume=: {', '.join(RESUMABLE_KEYS)}. "
            "Start a new run to change anything else.")
    if (target / layout.MULTIRUN).is_file():
        flags = [a for a in rest if not is_multirun([a])]
        return [argv[0], "-m", *_sweep_overrides(target, flags), f"resume={hydra_value(target)}"]
    if multirun:
        raise ConfigError(f"{target} is not a sweep directory (no multirun.yaml); "
                          f"resume a single run without -m: {continue_command(target)}")
    _check_run_dir(target)
    if writer:  # not a torchrun rank > 0 (rank 0 writes)
        lock.acquire(target)  # before Hydra writes into it; held until this process ends
    _enter_start_dir(target / ".hydra" / "hydra.yaml")
    return [argv[0], *rest, f"resume={hydra_value(target)}", f"hydra.run.dir={hydra_value(target)}"]


def _check_path(path: Path, what: str) -> None:
    """Refuse a path Hydra cannot work in: it stores paths in its config, where `${` interpolates."""
    if "${" in str(path):
        raise ConfigError(f"{what}: {path} holds '${{', which Hydra reads as an interpolation in the "
                          "paths it keeps in its config, so no run can work there. Rename the folder.")


def latest(root: Path) -> Path:
    """The most recently started run (or sweep) under `root`."""
    marker = layout.MULTIRUN if root.name == "multirun" else layout.SUMMARY
    found = list(root.glob(f"*/*/{marker}")) if root.is_dir() else []
    if not found:
        raise ConfigError(f"resume=latest: no {'sweep' if marker == layout.MULTIRUN else 'run'} "
                          f"found in {root.resolve()}.")
    newest = max(found, key=lambda p: p.stat().st_mtime if marker == layout.MULTIRUN else _started(p.parent))
    return newest.parent


def _started(run_dir: Path) -> float:
    summary = run_summary.read(run_dir) or {}
    return summary.get("started_at_unix") or (run_dir / layout.SUMMARY).stat().st_mtime


def _check_run_dir(run_dir: Path) -> None:
    if not (run_dir / ".hydra" / "config.yaml").is_file():
        raise ConfigError(f"resume={run_dir}: not a dlops run directory (no .hydra/config.yaml). "
                          "Give a directory under outputs/ (or a sweep under multirun/ with -m).")


def _enter_start_dir(hydra_yaml: Path) -> None:
    """Work from the directory the run was started in, so relative paths mean what they meant."""
    if not hydra_yaml.is_file():
        return
    start = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.runtime.cwd")
    if start and Path(start).is_dir() and Path(start).resolve() != Path.cwd().resolve():
        print(f"resume: working from {start}, where the run was started", file=sys.stderr)
        os.chdir(start)


def _sweep_overrides(sweep_dir: Path, args: list[str]) -> list[str]:
    """The sweep's own overrides (so Hydra makes the same jobs), the given ones, and its directory."""
    saved = OmegaConf.load(sweep_dir / layout.MULTIRUN)
    sweeper = OmegaConf.select(saved, "hydra.sweeper._target_")
    if sweeper != BASIC_SWEEPER:
        raise ConfigError(f"{sweep_dir} was made by {sweeper}; resume= continues grid sweeps (Hydra's "
                          "basic sweeper), which make the same jobs again. An Optuna search continues "
                          "with more trials when started again with the same hydra.sweep.dir.")
    given = [a for a in args if is_override(a)]
    task = [o for o in saved.hydra.overrides.task if override_key(o) != "resume"]
    swept = swept_keys(task)
    clash = [a for a in given if override_key(a) in swept]
    if clash:
        raise ConfigError(f"{' '.join(clash)} would change the jobs of the sweep in {sweep_dir}, "
                          "which varies that key; resume it without them.")
    task = [o for o in task if override_key(o) not in {override_key(a) for a in given}]
    hydra = [o for o in saved.hydra.overrides.hydra
             if override_key(o) not in ("hydra.sweep.dir", "hydra.mode", "hydra.run.dir")]
    if not (sweep_dir / layout.MULTIRUN_ORIGINAL).exists():  # Hydra rewrites multirun.yaml
        shutil.copy2(sweep_dir / layout.MULTIRUN, sweep_dir / layout.MULTIRUN_ORIGINAL)
    _enter_start_dir(sweep_dir / layout.MULTIRUN)
    # the user's config folder the sweep was composed with, so that its jobs compose again
    primary = configs.recorded_primary(OmegaConf.select(saved, "hydra.runtime.config_sources") or [])
    if primary:
        args = [f"--config-path={primary}", *configs.split_dir_flags(args)[0]]
    flags = [a for a in args if not is_override(a)]  # before the overrides: Hydra's parser wants them so
    return [*flags, *task, *hydra, *given, f"hydra.sweep.dir={hydra_value(sweep_dir)}"]


def _extended(new: DictConfig, original: DictConfig) -> bool:
    """Whether resume= was given something that extends the run (e.g. more trainer.max_epochs)."""
    return any(OmegaConf.select(new, k) != OmegaConf.select(original, k) for k in RESUMABLE_KEYS)


def nothing_to_train(new: DictConfig, run_dir: Path) -> bool:
    """Whether rank 0 trains nothing on `resume=` of `run_dir` with `new` (its resumed config): the
    run diverged, or it completed and nothing extends it. A DDP rank > 0 that SLURM or torchrun
    started beside rank 0 then ends at once, instead of waiting for a rank 0 that never comes."""
    status = (run_summary.read(run_dir) or {}).get("status")
    return status == "diverged" or (
        status == "completed" and not _extended(new, OmegaConf.load(run_dir / ".hydra" / "config.yaml")))


@dataclass
class Plan:
    """What a job does with its existing run dir."""

    cfg: DictConfig | None = None  # the config to train with
    summary: dict[str, Any] | None = None  # the continued summary.json (None: a fresh start)
    checkpoint: str | None = None  # last.ckpt to continue from (None: from the start)
    done: str | None = None  # nothing to do: why
    objective: float | None = None  # with `done`: the run's result, for a sweep


def resumed_config(cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, str | None]:
    """The config `run_dir` was started with, plus the resumable overrides given now, and its
    last.ckpt if there is one (what every DDP rank needs; `plan` also checks it)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    _check_run_dir(run_dir)
    new = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    for key in (override_key(o) for o in overrides):
        if key in RESUMABLE_KEYS:
            OmegaConf.update(new, key, OmegaConf.select(cfg, key), force_add=True)
    new.resume = str(run_dir).replace("${", "\\${")  # a path, never an interpolation
    checkpoint = run_dir / LAST_CHECKPOINT
    return new, str(checkpoint) if checkpoint.exists() else None


def plan(cfg: DictConfig, run_dir: Path) -> Plan:
    """Decide how to resume `run_dir`; raise ConfigError (writing nothing) when it cannot be resumed."""
    from hydra.core.hydra_config import HydraConfig

    overrides = [o for o in HydraConfig.get().overrides.task if override_key(o) != "resume"] \
        if HydraConfig.initialized() else []
    new, _ = resumed_config(cfg, run_dir)
    original = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    old = run_summary.read(run_dir)
    if old is None:  # a sweep job that never started (or a run that died before its first write)
        if found := lock.run_files(run_dir):
            raise ConfigError(f"{run_dir} has no {layout.SUMMARY} but holds a run's files "
                              f"({', '.join(found)}); resuming would start it over and overwrite "
                              "them. Move them away first.")
        return Plan(cfg=new)
    status = old.get("status")
    writer = liveness.writer_state(old) if status == "running" else "dead"
    if writer == "alive":
        raise ConfigError(f"{run_dir} is still running (pid {old['pid']} on {old['host']}); "
                          "stop it first (Ctrl-C or kill PID) and resume once it says interrupted.")
    if writer == "elsewhere":  # a shared file system: it may well be training there now
        raise ConfigError(f"{run_dir} says it is running as pid {old.get('pid')} on host "
                          f"{old.get('host')}, which cannot be checked from here; resume it on that "
                          "host once that process has stopped.")
    if status == "diverged":
        raise ConfigError(f"{run_dir} diverged (training loss not finite); resuming would diverge again. "
                          "Start a new run, e.g. with a lower model.optimizer.lr.")
    if status == "completed" and not _extended(new, original):
        best = old.get("best_metric")
        best = f"{best:.4f}" if isinstance(best, float) else best  # 4 digits, as every line shows it
        epochs = old.get("epochs_completed")
        return Plan(done=f"{run_dir} already completed ({epochs} epoch{'' if epochs == 1 else 's'}, best "
                         f"{old.get('monitor')}={best}); nothing to resume. To train it "
                         f"longer: {continue_command(run_dir)} trainer.max_epochs=N",
                    objective=old.get("best_metric"))
    say_starting("resuming", run_dir)  # before the checkpoint brings in torch
    from dlops.validate import validate

    validate(new)
    checkpoint, resumed_from, state = run_dir / LAST_CHECKPOINT, None, None
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    if checkpoint.exists():
        from dlops.lifecycle.checkpoints import check_model, read_checkpoint

        saved = read_checkpoint(checkpoint)
        if "net" in new.model:  # dlops' Classifier: a net config to compare (any model: its weights)
            check_model(saved, OmegaConf.to_container(new.model.net, resolve=True), checkpoint)
        resumed_from = {"checkpoint": str(LAST_CHECKPOINT), "epoch": saved["epoch"],
                        "global_step": saved["global_step"]}
        state = saved.get("dlops") or {}
    from dlops.tracking.loggers import continue_trackers

    original = run_summary.copied_from(old, run_dir)
    if original:  # its tracker runs (MLflow, W&B) are the original's: never continue those from here
        log.warning("%s was started as %s and copied (or moved) here: it continues as a run of its "
                    "own, with new tracker runs (MLflow, W&B); the original's are left as they are",
                    run_dir, original)
    continue_trackers(new, ResumePoint(resumed_from["global_step"] if resumed_from else 0, state, old,
                                       original))
    summary = run_summary.resumed(old, run_dir=run_dir, overrides=overrides, resumed_from=resumed_from,
                                  max_epochs=OmegaConf.select(new, "trainer.max_epochs"))
    log.info("resuming %s (attempt %d) from %s", run_dir, len(summary["attempts"]),
             f"{LAST_CHECKPOINT} (epoch {saved['epoch']}, step {saved['global_step']})" if resumed_from
             else f"the start: there is no {LAST_CHECKPOINT} yet")
    return Plan(cfg=new, summary=summary, checkpoint=str(checkpoint) if resumed_from else None)
