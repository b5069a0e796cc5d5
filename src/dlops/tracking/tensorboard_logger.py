"""TensorBoard: Lightning's logger, plus figures, one `hp_metric` and a resume without repeated steps."""

from collections.abc import Mapping
from typing import Any

from dlops.rundir.metrics import stage
from dlops.tracking.tracker import ResumePoint, Tracker


class TensorBoardLogger(Tracker):
    """Event files in `save_dir`; the config in the HPARAMS tab with the best `monitor` value as
    its `hp_metric`, written once, when the run ends (Lightning writes -1 as a placeholder first);
    `epoch` once per epoch (Lightning adds it to every logging call, testing included)."""

    writing_hparams = False  # inside Lightning's log_hyperparams, which logs the placeholder
    last_epoch: Any = None  # the `epoch` value last written
    last_step = 0  # the largest step written so far: where the final hp_metric goes

    lightning_base = "loggers.TensorBoardLogger"

    @classmethod
    def continue_config(cls, node: Any, point: ResumePoint) -> None:
        node.purge_step = point.step  # TensorBoard hides events at or after this step

    def log_hyperparams(self, params: Any, metrics: Any = None, step: int | None = None) -> None:
        self.writing_hparams = True
        try:
            super().log_hyperparams(params, metrics, step)
        finally:
            self.writing_hparams = False

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        metrics = dict(metrics)
        if self.writing_hparams:
            metrics.pop("hp_metric", None)  # the placeholder: the real value comes at the end
        if "epoch" in metrics:
            # testing after fit is no epoch of training (Lightning counts it as one more)
            others = [k for k in metrics if k != "epoch"]
            testing = bool(others) and all(stage(k) == "test" for k in others)
            if testing or metrics["epoch"] == self.last_epoch:
                del metrics["epoch"]
            else:
                self.last_epoch = metrics["epoch"]
        self.last_step = max(self.last_step, step or 0)
        if metrics:
            super().log_metrics(metrics, step)

    def log_figures(self, figures: dict[str, Any], result: dict[str, Any], tag: str, step: int) -> None:
        for name, figure in figures.items():
            self.experiment.add_figure(f"{tag}/{name}", figure, step, close=False)

    def finish(self, status: str, best: float | None) -> None:
        if best is not None:  # at the last step: a resume that continues the run hides it (purge_step)
            self.log_metrics({"hp_metric": best}, self.last_step)
        super().finish(status, best)
