"""TensorBoard: Lightning's logger, plus figures, `hp_metric` and a resume without repeated steps."""

from typing import Any

from dlops.tracking.tracker import ResumePoint, Tracker


class TensorBoardLogger(Tracker):
    """Event files in `save_dir`; the config in the HPARAMS tab with the best `monitor` value as
    its `hp_metric`."""

    lightning_base = "loggers.TensorBoardLogger"

    @classmethod
    def continue_config(cls, node: Any, point: ResumePoint) -> None:
        node.purge_step = point.step  # TensorBoard hides events at or after this step

    def log_figures(self, figures: dict[str, Any], result: dict[str, Any], tag: str, step: int) -> None:
        for name, figure in figures.items():
            self.experiment.add_figure(f"{tag}/{name}", figure, step, close=False)

    def finish(self, status: str, best: float | None) -> None:
        if best is not None:
            self.log_metrics({"hp_metric": best})
        super().finish(status, best)
