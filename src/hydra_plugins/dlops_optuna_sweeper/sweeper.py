"""The sweeper: ask Optuna for trials, launch them as jobs, tell Optuna how each one ended.

- Trial N runs as job N, in `<sweep dir>/N`: a rerun on the same stored study continues the
  numbering instead of reusing the first run dirs. One sweep process per study at a time.
- How a trial ended comes from its run's `summary.json`: `completed` with a finite value is
  COMPLETE, `pruned` is PRUNED (its last reported value stands), anything else (failed,
  diverged: `pipeline.train` returns NaN) is FAIL, and the search goes on.
- Each job learns its trial from `dlops.lifecycle.optuna_trial` (an environment variable set through
  `hydra.job.env_set`) and reports to the study through its database storage.
- A study optimises one metric in one direction: continuing it with another `monitor` or `mode`
  would rank values of different metrics against each other, so that is refused; so are a
  storage that cannot be used and `n_trials` below 1, each with one message.
"""

import fcntl
import logging
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from dlops.errors import ConfigError
from dlops.lifecycle.optuna_trial import TrialRef, open_storage
from dlops.rundir import summary as run_summary
from dlops.rundir.metrics import resolve_mode
from hydra_plugins.dlops_optuna_sweeper.search_space import search_space, trial_overrides

log = logging.getLogger(__name__)
MONITOR_ATTR = "dlops.monitor"  # the study's user attribute naming the metric it optimises
SQLITE = "sqlite:///"


class StudyError(CompactHydraException):
    """A study that cannot be run as asked; Hydra prints the message alone, without a traceback."""


def study_direction(direction: str | None, monitor: str | None) -> str:
    """`minimize` or `maximize`. `hydra.sweeper.direction` is one of those, or the run's `mode`
    (min, max or auto), resolved by the runs' own rule (dlops.rundir.metrics.resolve_mode)."""
    if direction in ("minimize", "maximize"):
        return direction
    if direction not in ("min", "max", "auto", None):
        raise StudyError(f"hydra.sweeper.direction={direction}: give minimize, maximize, or the run's "
                         "mode (min, max or auto, e.g. hydra.sweeper.direction=${mode}).")
    try:
        return resolve_mode(str(monitor), direction) + "imize"
    except ConfigError as exc:
        raise StudyError(f"hparams_search: {exc}") from None


@contextmanager
def creation_lock(storage: str):
    """An exclusive lock beside a SQLite study file while it is opened (and maybe made): Optuna makes
    its tables on first use, and two sweeps doing so at once collided (IntegrityError)."""
    if not storage.startswith(SQLITE):
        yield
        return
    db = Path(storage[len(SQLITE):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def open_study(storage: str | None, name: str | None, direction: str, monitor: str | None,
               sampler: Any) -> Any:
    """The study `name` in `storage` (made if new, None: in memory), to `direction` `monitor`;
    StudyError with one message for a storage that cannot be used or a study made for another
    metric or direction."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with creation_lock(storage or ""):
            study = optuna.create_study(study_name=name, storage=open_storage(storage) if storage else None,
                                        sampler=sampler, direction=direction, load_if_exists=True)
    except (SQLAlchemyError, optuna.exceptions.OptunaError, OSError, ValueError) as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise StudyError(f"cannot use the Optuna storage {storage}: {reason[:300]}. Give "
                         "hydra.sweeper.storage a database URL Optuna can open and write, such as "
                         "sqlite:///path/to/optuna.db, or null to keep the study in memory; move a "
                         "damaged file away.") from None
    started = (study.user_attrs.get(MONITOR_ATTR), study.direction.name.lower())
    if started[0] is None:
        study.set_user_attr(MONITOR_ATTR, monitor)  # new (or made before dlops recorded it)
    elif started != (monitor, direction):
        raise StudyError(
            f"the study {study.study_name} in {storage} was started to {started[1]} {started[0]}; "
            f"this sweep would {direction} {monitor}, which would rank its trials against the "
            "study's on another scale. Use another hydra.sweep.dir (or hydra.sweeper.study_name) "
            "for a new study, or the study's monitor and mode to continue it.")
    return study


class DlopsOptunaSweeper(Sweeper):
    """`hydra.sweeper` for an Optuna study that a rerun continues, with pruning."""

    def __init__(self, study_name: str | None, storage: str | None, direction: str, n_trials: int,
                 n_jobs: int, sampler: Any, pruner: Any, params: Any) -> None:
        self.study_name, self.storage, self.direction = study_name, storage, direction
        self.n_trials, self.n_jobs = n_trials, max(1, n_jobs)
        self.sampler, self.pruner = sampler, pruner
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        import optuna
        from hydra.utils import instantiate

        if self.n_trials < 1:
            raise StudyError(f"hydra.sweeper.n_trials={self.n_trials}: a sweep runs at least one "
                             "trial; give hydra.sweeper.n_trials=1 or more.")
        monitor = self.config.get("monitor")
        direction = study_direction(self.direction, monitor)
        space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)  # the study lives there
        storage = absolute_sqlite(self.storage) if self.storage else None
        pruner = OmegaConf.to_container(self.pruner, resolve=True) if self.pruner else None
        study = open_study(storage, self.study_name, direction, monitor,
                           instantiate(self.sampler) if self.sampler else None)
        if pruner and not storage:
            log.warning("hydra.sweeper.storage is null: trials cannot report to the study, so none "
                        "is pruned")
        log.info("study %s in %s: %d trials stored, %d to run", study.study_name, storage or "memory",
                 len(study.trials), self.n_trials)
        returns: list[JobReturn] = []
        while len(returns) < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - len(returns)))]
            jobs = [trial_overrides(t.params, fixed) for t in trials]
            if storage:
                jobs = [[*job, TrialRef(storage, study.study_name, t.number, pruner).env_override()]
                        for job, t in zip(jobs, trials, strict=True)]
            try:
                batch = self.launcher.launch(jobs, initial_job_idx=trials[0].number)
            except BaseException:  # e.g. Ctrl-C: the trials that were running did not finish
                for trial in trials:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                raise
            for trial, ret in zip(trials, batch, strict=True):
                state, value = outcome(ret)
                study.tell(trial, value, state=getattr(optuna.trial.TrialState, state))
                log.info("trial %d: %s%s", trial.number, state, "" if value is None else f" {value:.6g}")
            returns.extend(batch)
        write_results(study, Path(str(self.config.hydra.sweep.dir)))
        return returns


def outcome(ret: JobReturn) -> tuple[str, float | None]:
    """How a job ended, as an Optuna trial state name and the value to tell."""
    run_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
    status = (run_summary.read(run_dir) or {}).get("status") if run_dir else None
    if status == "pruned":  # also when HYDRA_FULL_ERROR=1 let the Pruned exception through
        return "PRUNED", None
    if ret.status != JobStatus.COMPLETED:  # the task raised (e.g. HYDRA_FULL_ERROR=1)
        return "FAIL", None
    value = ret.return_value
    if status in (None, "completed") and isinstance(value, int | float) and math.isfinite(value):
        return "COMPLETE", float(value)
    return "FAIL", None


def absolute_sqlite(url: str) -> str:
    """A SQLite URL with an absolute path, so that a job started elsewhere finds the same file."""
    if url.startswith(SQLITE) and not url.startswith(SQLITE + "/"):
        return SQLITE + str(Path(url[len(SQLITE):]).resolve())
    return url


def write_results(study: Any, sweep_dir: Path) -> None:
    """Log the best trial and write `optimization_results.yaml` (as Hydra's Optuna sweeper did)."""
    if not any(t.state.name == "COMPLETE" for t in study.trials):
        log.error("no trial of study %s completed", study.study_name)
        return
    best = study.best_trial
    log.info("best trial %d: value %.6g, params %s", best.number, best.value, best.params)
    OmegaConf.save({"name": "optuna", "best_trial": best.number, "best_params": best.params,
                    "best_value": best.value}, sweep_dir / "optimization_results.yaml")
