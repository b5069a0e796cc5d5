"""A callback that makes each training epoch last at least `seconds`: SLURM tests need a job to
still be training when its time-limit signal, `scancel` or `scontrol requeue` comes, on a fast
machine as on a loaded one. Sleeping changes no weights (no random numbers are drawn)."""

import time

import pytorch_lightning as pl


class Pace(pl.Callback):
    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        time.sleep(self.seconds)
