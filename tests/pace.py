"""A callback that makes each training epoch last at least `seconds`: SLURM tests need a job to
still be training when its time-limit signal, `scancel` or `scontrol requeue` comes, on a fast
machine as on a loaded one. Sleeping changes no weights (no random numbers are drawn)."""

import time
from typing import Any

from dlops.lifecycle.slurm import restarts
from dlops.lightning import Adaptable


class Pace(Adaptable):
    lightning_base = "callbacks.Callback"  # of the run's Lightning package

    def __init__(self, seconds: float = 0.0, first_attempt_only: bool = False) -> None:
        self.seconds = seconds
        # with this, a requeued job trains at full speed: one interruption is enough to test
        self.first_attempt_only = first_attempt_only

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not (self.first_attempt_only and restarts()):
            time.sleep(self.seconds)
