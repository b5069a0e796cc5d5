"""What a job of dlops' Optuna sweeper knows about its trial, and how it reaches the study.

The sweeper hands each job one environment variable, `DLOPS_OPTUNA_TRIAL` (JSON: storage URL,
study name, trial number, pruner config), through `hydra.job.env_set`: it reaches every launcher's
workers (joblib, submitit) and the DDP ranks a job starts, and it is not one of the job's
overrides, so reports and the sweep summary do not see it. The job reports to the study through
the database storage, which works across processes. Light on purpose: no torch, optuna lazily.
"""

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

ENV = "DLOPS_OPTUNA_TRIAL"
# a second process writing to the SQLite study (a parallel trial reporting an epoch) holds its lock
# for milliseconds; wait for it instead of failing with "database is locked" after sqlite's 5 s
SQLITE_TIMEOUT_S = 60


@dataclass(frozen=True)
class TrialRef:
    """One trial of a study in a database storage, and the pruner that judges it (None: never)."""

    storage: str
    study: str
    number: int
    pruner: dict[str, Any] | None = None

    def env_override(self) -> str:
        """The Hydra override that hands this trial to its job, quoted for Hydra's grammar."""
        text = json.dumps(asdict(self), separators=(",", ":")).replace("\\", "\\\\").replace("'", "\\'")
        return f"++hydra.job.env_set.{ENV}='{text}'"


def current_trial() -> TrialRef | None:
    """The trial this process runs as, or None outside a trial of dlops' Optuna sweeper."""
    text = os.environ.get(ENV)
    return TrialRef(**json.loads(text)) if text else None


def open_storage(url: str) -> Any:
    """Optuna's database storage at `url`, waiting for SQLite's lock instead of failing."""
    import optuna

    engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=engine)


def load_trial(ref: TrialRef) -> Any:
    """The `optuna.Trial` that `ref` names, with its pruner, to report to and ask `should_prune`."""
    import optuna
    from hydra.utils import instantiate

    storage = open_storage(ref.storage)
    pruner = instantiate(ref.pruner) if ref.pruner else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=ref.study, storage=storage, pruner=pruner)
    study_id = storage.get_study_id_from_name(ref.study)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, ref.number))
