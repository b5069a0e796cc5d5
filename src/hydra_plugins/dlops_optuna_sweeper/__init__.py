"""Hydra's Optuna sweeper for dlops: a rerun continues the study, a failed job fails its trial.

- Job numbers continue from the trials the study already has, so trial N runs in
  `<sweep dir>/N` and a rerun in the same sweep dir adds run dirs instead of reusing the first
  ones (Hydra's sweeper numbers jobs from 0 in every invocation). One sweep process per study
  at a time; run trials in parallel with hydra.sweeper.n_jobs and a parallel launcher.
- A job that failed returns NaN (`dlops.pipeline.record_failure`); Optuna 2.10 refuses a NaN
  objective and Hydra's sweeper then crashes, so NaN is handed over as "no value": the trial
  is marked failed and the search goes on.

Hydra accepts sweepers only from the `hydra_plugins` package, hence this package.
"""

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)


class ContinuingOptunaSweeper(OptunaSweeper):
    """`hydra.sweeper` for a study that a rerun of the same command continues."""

    def sweep(self, arguments: list[str]) -> Any:
        impl = self.sweeper
        Path(str(impl.sweep_dir)).mkdir(parents=True, exist_ok=True)  # the study may live there
        impl.job_idx = len(self.trials())
        impl.launcher.launch = _nan_as_failure(impl.launcher.launch)
        try:
            return impl.sweep(arguments)
        except ValueError:  # Optuna's "no trials are completed yet", asked for the best trial
            if any(t.state.name == "COMPLETE" for t in self.trials()):
                raise
            log.error("no trial of study %s completed", impl.study_name)

    def trials(self) -> list[Any]:
        """The trials stored so far (none for a new study or one kept in memory)."""
        import optuna

        if self.sweeper.storage is None:
            return []
        try:
            return optuna.load_study(study_name=self.sweeper.study_name,
                                     storage=self.sweeper.storage).trials
        except KeyError:  # a new study
            return []


def _nan_as_failure(launch: Callable[..., Any]) -> Callable[..., Any]:
    def launch_jobs(*args: Any, **kwargs: Any) -> Any:
        returns = launch(*args, **kwargs)
        for ret in returns:
            value = ret.return_value if ret.status == JobStatus.COMPLETED else None
            if isinstance(value, float) and math.isnan(value):
                ret.return_value = None
        return returns
    return launch_jobs
