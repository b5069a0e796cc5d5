"""The progress bar on a terminal: the training loss and the monitored metric on it, epochs
numbered as everywhere else in dlops, and log lines printed above it, never glued to its end.

Off a terminal (sweeps, SLURM, CI) there is no bar (`dlops.overhead.trainer_speedups`); each
epoch gets one log line instead (`dlops.callbacks.progress.SummaryProgress`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dlops.lightning import Adaptable

if TYPE_CHECKING:
    import lightning.pytorch as pl


def epoch_label(epoch: int, max_epochs: int | None) -> str:
    """`3/9`: epoch 3 of epochs 0..9. Epochs are numbered from 0, as Lightning numbers them in
    checkpoint names, metrics.csv and plots, on the bar, in the log and in plot titles alike."""
    return f"{epoch}/{max_epochs - 1}" if max_epochs and max_epochs > 0 else str(epoch)


class ProgressBar(Adaptable):
    """Lightning's TQDM bar that always shows `loss` (the epoch's mean training loss so far, from
    what `training_step` returns) and the monitored metric once it is known, whatever the model
    passes as `prog_bar`. While it is drawn, log records (and warnings) go through `tqdm.write`,
    which clears the bar, prints the line and draws the bar again below it."""

    lightning_base = "callbacks.TQDMProgressBar"

    def __init__(self, refresh_rate: int = 20, monitor: str | None = None, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self.monitor = monitor
        self.loss_sum: Any = 0.0  # a tensor once a step has run; read (a device sync) only when drawn
        self.loss_count = 0
        self.redirect: contextlib.ExitStack | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.redirect is None and not self.is_disabled:
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.redirect = contextlib.ExitStack()
            self.redirect.enter_context(logging_redirect_tqdm())
            self.redirect.callback(logging.captureWarnings, False)
            logging.captureWarnings(True)  # a warning printed mid-bar would be glued to it too

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.restore_logging()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self.restore_logging()

    def restore_logging(self) -> None:
        """Give the console its log handlers back."""
        if self.redirect is not None:
            self.redirect.close()
            self.redirect = None

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.loss_sum, self.loss_count = 0.0, 0
        label = epoch_label(trainer.current_epoch, trainer.max_epochs)
        self.train_progress_bar.set_description(f"Epoch {label}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is not None and getattr(loss, "numel", lambda: 0)() == 1:
            self.loss_sum = self.loss_sum + loss.detach()
            self.loss_count += 1
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # a logger's version: says nothing about training
        if self.loss_count:
            metrics["loss"] = float(self.loss_sum) / self.loss_count
        value = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        if value is not None and getattr(value, "numel", lambda: 1)() == 1:
            metrics[self.monitor] = float(value)
        return metrics
