"""The sweeper's config, registered as `hydra/sweeper: dlops_optuna` (see conf/hparams_search/)."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class DlopsOptunaSweeperConf:
    _target_: str = "hydra_plugins.dlops_optuna_sweeper.sweeper.DlopsOptunaSweeper"
    # the sweeper gets the sampler and pruner as configs: a job rebuilds the pruner from its config
    _recursive_: bool = False
    # the study's name in `storage`; a rerun with the same storage and name continues the study
    study_name: str | None = None
    # an Optuna database URL (e.g. sqlite:///${hydra.sweep.dir}/optuna.db); null = in memory only,
    # and then no pruning (a job reports to the study through the database)
    storage: str | None = None
    # minimize or maximize, or the run's mode: min, max, or auto (inferred from `monitor`'s name,
    # as a run does; see dlops.rundir.metrics.resolve_mode)
    direction: str = "auto"
    # trials this invocation runs (1 or more)
    n_trials: int = 20
    # trials launched together; above 1 only with a parallel launcher (hydra/launcher=joblib)
    n_jobs: int = 1
    # any Optuna sampler, instantiated with hydra.utils.instantiate
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    # any Optuna pruner; null = no pruning
    pruner: Any = field(default_factory=lambda: {
        "_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 1})
    # search space: key -> choice(...), interval(a, b), tag(log, interval(a, b)), range(a, b) or a value
    params: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="dlops_optuna", node=DlopsOptunaSweeperConf,
                             provider="dlops")
