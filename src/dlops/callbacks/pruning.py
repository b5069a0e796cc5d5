"""Pruning for trials of dlops' Optuna sweeper: report `monitor` every epoch, stop when told to."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from dlops.errors import Pruned
from dlops.lifecycle.optuna_trial import TrialRef, current_trial, load_trial
from dlops.lightning import Adaptable

if TYPE_CHECKING:
    import lightning.pytorch as pl


def pruning_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """`[OptunaPruning]` in a trial of dlops' Optuna sweeper with a pruner; else none."""
    ref = current_trial()
    return [OptunaPruning(ref, cfg.monitor)] if ref and ref.pruner else []


class OptunaPruning(Adaptable):
    """At each epoch end, report `monitor` to the trial (step = epoch) and raise `Pruned` when the
    study's pruner says the trial is unpromising; the pipeline records it as status `pruned`.

    A `Checkpoint` subclass, so Lightning runs it after the model has logged the epoch's training
    metrics and after the checkpoints and summary of the epoch are written (it is added last).
    Under DDP, rank 0 reports and decides, and every rank stops together.
    """

    lightning_base = "callbacks.Checkpoint"

    def __init__(self, ref: TrialRef, monitor: str) -> None:
        self.ref, self.monitor = ref, monitor
        self.trial: Any = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value, prune = trainer.callback_metrics.get(self.monitor), False
        if trainer.is_global_zero and value is not None and math.isfinite(float(value)):
            self.trial = self.trial or load_trial(self.ref)
            self.trial.report(float(value), step=trainer.current_epoch)
            prune = self.trial.should_prune()
        if trainer.world_size > 1:
            prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            shown = "?" if value is None else f"{float(value):.4g}"
            pruner = str(self.ref.pruner.get("_target_", "")).rsplit(".", 1)[-1]
            raise Pruned(f"pruned by Optuna's {pruner} after epoch {trainer.current_epoch + 1} "
                         f"({self.monitor}={shown})")
