"""Keep a run resumable: `last.ckpt` every epoch, every N steps and when asked to stop; resume state."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dlops.errors import Interrupted
from dlops.lifecycle import signals
from dlops.lightning import Adaptable
from dlops.rundir import layout
from dlops.tracking.loggers import checkpoint_state

if TYPE_CHECKING:
    import lightning.pytorch as pl

# Under DDP, asking every process whether one of them was told to stop is a collective (and, on
# GPUs, a wait for the device): ~0.25 ms a batch with gloo on a CPU. It is asked every this
# many batches, so a stop takes effect within that many; a single process asks every batch.
DDP_STOP_CHECK_EVERY = 16


class Resumable(Adaptable):
    """Writes `dirpath/last.ckpt` and stores in every checkpoint what an exact resume needs.

    - On SIGINT/SIGTERM (see `dlops.lifecycle.signals`): at the end of the current training batch (or,
      in the epoch's last batch or its validation, at the epoch's end), save `last.ckpt` and raise
      `Interrupted`; during testing, stop at the end of the current batch. Under DDP, within
      `DDP_STOP_CHECK_EVERY` batches.
    - Every `every_n_train_steps` training steps (if set): save `last.ckpt`. Not in an epoch's last
      batch: Lightning resumes from there as if the epoch's validation had run; the epoch-end
      checkpoint follows anyway.
    - At every epoch end, once the epoch's metrics are written (Lightning's ModelCheckpoint
      `save_last` writes it only in epochs that improved the monitored metric).
    - In each checkpoint: the random number generator states and what the trackers need (how
      many rows metrics.csv had), so that a resumed run draws the same random numbers and appends
      exactly the missing rows.

    A `Checkpoint` subclass, so Lightning runs it after the model's epoch-end hooks.
    """

    lightning_base = "callbacks.Checkpoint"

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = None) -> None:
        self.last_path = Path(dirpath) / layout.LAST_CHECKPOINT.name
        self.every_n_train_steps = every_n_train_steps

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        signals.install()  # Lightning put its own SIGTERM handler in place for fit: take it back

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # Lightning would resume from here past the epoch's validation: wait for its end
        if self._stop_requested(trainer, batch_idx):
            self._save(trainer)
            raise Interrupted(signals.requested() or signals.SIGNALS[1])
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)  # after the epoch's rows are written: a resume starts the next epoch
        if self._stop_requested(trainer):  # e.g. asked during the last batch or the validation
            raise Interrupted(signals.requested() or signals.SIGNALS[1])

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                          batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._stop_requested(trainer, batch_idx):
            raise Interrupted(signals.requested() or signals.SIGNALS[1])

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        state: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        if trainer.is_global_zero:  # e.g. how many rows metrics.csv has
            state.update(checkpoint_state(trainer.loggers))
        checkpoint["dlops"] = state

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("dlops") or {}
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def _stop_requested(self, trainer: pl.Trainer, batch_idx: int | None = None) -> bool:
        """Whether a stop was asked for, on any process (all stop at the same batch). Under DDP,
        after a batch only every DDP_STOP_CHECK_EVERY batches: elsewhere False."""
        if trainer.world_size > 1 and batch_idx is not None and (batch_idx + 1) % DDP_STOP_CHECK_EVERY:
            return False
        return bool(trainer.strategy.reduce_boolean_decision(signals.requested() is not None, all=False))

    def _save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.last_path, weights_only=False)  # the full training state
