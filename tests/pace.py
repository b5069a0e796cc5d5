"""A callback that makes each training epoch last at least `seconds`: SLURM tests need a job to
still be training when its time-limit signal, `scancel` or `scontrol requeue` comes, on a fast
machine as on a loaded one. Sleeping changes no weights (no random numbers are drawn)."""

import os
import time

import pytorch_lightning as pl


class Pace(pl.Callback):
    def __init__(self, seconds: float = 0.0, first_attempt_only: bool = False) -> None:
        self.seconds = seconds
        # SLURM counts a job's requeues in SLURM_RESTART_COUNT: with this, a requeued job trains
        # at full speed, so that one interruption is enough to test and the test is quicker
        self.first_attempt_only = first_attempt_only

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self.first_attempt_only and int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0):
            time.sleep(self.seconds)
