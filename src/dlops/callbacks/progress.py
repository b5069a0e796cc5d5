"""Keep `summary.json` current while a run trains, so a killed run still shows its progress."""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dlops.errors import ConfigError
from dlops.lifecycle.ddp import all_gather
from dlops.lightning import Adaptable
from dlops.rundir import summary as run_summary

if TYPE_CHECKING:
    import lightning.pytorch as pl

log = logging.getLogger(__name__)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Lightning's logged metrics as plain floats (NaN stays NaN)."""
    return {k: float(v) for k, v in sorted(metrics.items()) if getattr(v, "numel", lambda: 1)() == 1}


def best_checkpoint(trainer: pl.Trainer, run_dir: str | Path) -> tuple[str | None, float | None]:
    """Path (relative to `run_dir` when inside it) and score of the best checkpoint kept so far, if
    a checkpoint callback keeps one."""
    kept = [c for c in trainer.checkpoint_callbacks if getattr(c, "best_model_path", "")]
    if not kept:
        return None, None
    path, score = Path(kept[0].best_model_path), kept[0].best_model_score
    with contextlib.suppress(ValueError):
        path = path.resolve().relative_to(Path(run_dir).resolve())
    return str(path), None if score is None else float(score)


class SummaryProgress(Adaptable):
    """Rewrites the run's summary at the end of every epoch with the latest metrics.

    A `Checkpoint` subclass so that Lightning calls it after the module's own
    `on_train_epoch_end` (where the epoch's training metrics are logged).
    """

    lightning_base = "callbacks.Checkpoint"

    def __init__(self, run_dir: str, summary: dict[str, Any]) -> None:
        self.run_dir, self.summary = run_dir, summary

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        path, score = best_checkpoint(trainer, self.run_dir)
        run_summary.progress(self.summary, epochs_completed=trainer.current_epoch + 1,
                             global_step=trainer.global_step,
                             last_metrics=scalar_metrics(trainer.callback_metrics), best_checkpoint=path,
                             best_metric=None if score is None or math.isnan(score) else score)
        run_summary.write(self.run_dir, self.summary)
        from dlops.callbacks.bar import epoch_label

        metrics = ", ".join(f"{k} {v:.4g}" for k, v in self.summary["last_metrics"].items())
        log.info(f"epoch {epoch_label(trainer.current_epoch, trainer.max_epochs)}: {metrics}")


class MonitorCheck(Adaptable):
    """Stops the run, with one message, when `monitor` cannot pick a best checkpoint:

    - at the end of the first validated epoch, when it is not among the metrics the model logged
      (naming those it did log: Lightning would fail later, or keep no best checkpoint silently);
    - under DDP, in any epoch where its value differs between processes (a metric logged without
      `sync_dist=True`): each process would keep another "best" checkpoint, and look for a file
      that rank 0 never wrote.

    A `Checkpoint` subclass placed before the others, so that it runs after the model's epoch-end
    hook (where a model may log training metrics) and before the checkpoint callbacks.
    """

    lightning_base = "callbacks.Checkpoint"

    def __init__(self, monitor: str) -> None:
        self.monitor, self.validated, self.checked = monitor, False, False
        self.compared_at_step = -1  # the step whose value all processes were last found to share

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validated = self.validated or not trainer.sanity_checking
        if not trainer.sanity_checking:
            self._check_same_on_every_process(trainer, pl_module)

    def _check_same_on_every_process(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.world_size < 2 or value is None or self.compared_at_step == trainer.global_step:
            return
        self.compared_at_step = trainer.global_step
        mine = value.detach().float().reshape(1).to(pl_module.device)
        values = all_gather(mine).cpu()  # every process calls this hook
        if not torch.isclose(values, values[0], rtol=0, atol=0, equal_nan=True).all():
            shown = ", ".join(f"rank {rank}: {v:.6g}" for rank, v in enumerate(values.tolist()))
            raise ConfigError(
                f"monitor={self.monitor} differs between the {trainer.world_size} DDP processes "
                f"({shown}): the model logs it per process, so each would keep another best "
                f"checkpoint. Log it synced over the processes: self.log(\"{self.monitor}\", value, "
                "sync_dist=True), or compute it from every process's outputs (e.g. a torchmetrics metric).")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_same_on_every_process(trainer, pl_module)  # a training metric is known only now
        if self.checked or not self.validated:
            return
        self.checked = True
        if self.monitor not in trainer.callback_metrics:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
            raise ConfigError(f"monitor={self.monitor} is not logged by this model; it logged: "
                              f"{logged}. Set monitor= to one of them (and mode=min or mode=max).")
