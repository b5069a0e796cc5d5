"""What dlops asks of a tracker beyond Lightning's Logger API, in one place.

Each tracker is one module in `dlops.tracking` whose Lightning logger subclass mixes in
`Tracker` and overrides the hooks it needs, plus one file in `conf/logger/` whose `_target_` is
that class. Nothing else names a tracker: the pipeline, resume and the evaluation callback call
these hooks. A logger that is not a `Tracker` (any other Lightning logger a user configures)
gets the defaults: no summary entry, no figures, `finalize` at the end.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlops.lightning import Adaptable

# `_target_`s of logger configs written before the trackers moved into their own modules: a run
# started then still resumes with the same files and runs
LEGACY_TARGETS = {
    "dlops.tracking.csv.CSVLogger": "dlops.tracking.csv_logger.CSVLogger",
    "pytorch_lightning.loggers.TensorBoardLogger": "dlops.tracking.tensorboard_logger.TensorBoardLogger",
    "dlops.tracking.wandb.wandb_logger": "dlops.tracking.wandb_logger.WandbLogger",
}


@dataclass
class ResumePoint:
    """Where a resumed run continues: what a tracker needs to pick up without repeating steps."""

    step: int = 0  # the global step of the checkpoint the run continues from (0: from the start)
    state: dict[str, Any] | None = None  # what trackers stored in that checkpoint; None: no checkpoint
    summary: dict[str, Any] = field(default_factory=dict)  # the run's summary.json before this attempt
    # the run dir this run was started in, when it now lives in another (a copy, or moved): the
    # tracker runs named in `summary` belong to that one, so new ones are started
    copied_from: str | None = None


class Tracker(Adaptable):
    """Hooks a dlops tracker implements; every default does nothing (or what Lightning does).

    A subclass names its Lightning logger in `lightning_base` (e.g. `loggers.CSVLogger`): it is
    made of the run's Lightning package (see dlops.lightning).
    """

    @classmethod
    def continue_config(cls, node: Any, point: ResumePoint) -> None:
        """Edit this tracker's logger config (`node`) so a resumed run continues where `point` is."""

    def checkpoint_state(self) -> dict[str, Any]:
        """What a resume needs to know about this tracker at a checkpoint (stored in it, rank 0);
        keys must not clash with other trackers'."""
        return {}

    @classmethod
    def log_export(cls, node: Any, summary: dict[str, Any], export_dir: Path) -> str | None:
        """Log the run's export (`export_dir/model.onnx`, `model.json`) where this tracker keeps
        models, for the run that `summary` names (at the end of training, or by `dlops export`
        later, with this tracker's logger config `node`); may add to its entry in `summary`.
        Returns a line saying where it went, or None when there was nothing to log."""
        return None

    def start(self, summary: dict[str, Any]) -> None:
        """The run has started (its `summary` is filled in): tag the run, record in `summary` what
        a resume or a reader needs under the tracker's own key."""

    def log_figures(self, figures: dict[str, Any], result: dict[str, Any], tag: str, step: int) -> None:
        """Log the evaluation figures (matplotlib, by name) and their numbers natively."""

    def finish(self, status: str, best: float | None) -> None:
        """End the tracker's run with the run's outcome: `completed`, `failed`, `diverged` or
        `interrupted`; `best` is the best monitored value, if any."""
        self.finalize("success" if status == "completed" else "failed")


def tracker_class(target: str) -> type[Tracker] | None:
    """The Tracker class a logger config's `_target_` names (None for other loggers)."""
    from hydra.utils import get_object

    try:
        found = get_object(LEGACY_TARGETS.get(target, target))
    except Exception:  # noqa: BLE001 - not ours to judge here: instantiating it will say what is wrong
        return None
    return found if isinstance(found, type) and issubclass(found, Tracker) else None


def sweep_dir() -> str | None:
    """The sweep directory (e.g. multirun/2026-11-26/16-14-15) in a multirun, else None: what
    trackers group a sweep's jobs by."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return HydraConfig.get().sweep.dir
