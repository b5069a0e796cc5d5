"""A Lightning callback that times a real `python train.py` run from inside, for the benchmarks.

Added on the command line, it leaves everything else as it is:

    python train.py +callbacks.epoch_timer._target_=epoch_timer.EpochTimer \
        +callbacks.epoch_timer.path=timing.json          (with bench/ on PYTHONPATH)

It writes unix times (comparable with the parent's clock) of the fit start, the first training
step, every epoch start and the end of fit, the seconds each epoch spent training, and the
process's CPU seconds at every epoch start and the end of fit (a measure that other processes
on a shared machine disturb less than wall time).
"""

import json
import time
from pathlib import Path

import pytorch_lightning as pl
import torch


class EpochTimer(pl.Callback):
    """Records when fit, the first step and every epoch start and end; writes them at the end."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.times: dict = {"fit_start": None, "first_step": None, "epoch_starts": [],
                            "train_ends": [], "fit_end": None, "cpu_epoch_starts": [],
                            "cpu_fit_end": None, "threads": torch.get_num_threads()}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.times["fit_start"] = time.time()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.times["epoch_starts"].append(time.time())
        self.times["cpu_epoch_starts"].append(time.process_time())

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: object, batch_idx: int) -> None:
        if self.times["first_step"] is None:
            self.times["first_step"] = time.time()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:  # the epoch's training batches are done
            self.times["train_ends"].append(time.time())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.times["fit_end"] = time.time()
        self.times["cpu_fit_end"] = time.process_time()
        self.path.write_text(json.dumps(self.times, indent=2))


def epoch_seconds(times: dict, clock: str = "") -> list[float]:
    """Each epoch's wall (clock="cpu_": CPU) time, validation, checkpoints and logging included."""
    bounds = times[f"{clock}epoch_starts"] + [times[f"{clock}fit_end"]]
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


def train_seconds(times: dict) -> list[float]:
    """The training part of each epoch (up to the start of its validation)."""
    return [b - a for a, b in zip(times["epoch_starts"], times["train_ends"], strict=False)]
