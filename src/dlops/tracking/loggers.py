"""What dlops does with every active logger: continue, start, log the config, figures, finish.

Each step calls the logger's `Tracker` hook (see dlops.tracking.tracker); a logger that is not a
`Tracker` gets the default behaviour.
"""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dlops.rundir import layout
from dlops.tracking.tracker import LEGACY_TARGETS, ResumePoint, Tracker, tracker_class


def continue_trackers(cfg: DictConfig, point: ResumePoint) -> None:
    """Point each logger config of a resumed run at where the checkpoint left off."""
    for node in (cfg.get("logger") or {}).values():
        target = str((node or {}).get("_target_", ""))
        if target in LEGACY_TARGETS:
            node._target_ = LEGACY_TARGETS[target]
        cls = tracker_class(target) if target else None
        if cls is not None:
            cls.continue_config(node, point)


def checkpoint_state(loggers: list) -> dict[str, Any]:
    """What every tracker stores in a checkpoint for a resume (see `Tracker.checkpoint_state`)."""
    state: dict[str, Any] = {}
    for logger in loggers:
        if isinstance(logger, Tracker):
            state.update(logger.checkpoint_state())
    return state


def record_trackers(loggers: list, summary: dict[str, Any]) -> None:
    """Start every tracker's run and note in the summary which loggers write (and where)."""
    for logger in loggers:
        if isinstance(logger, Tracker):
            logger.start(summary)
        summary.setdefault("loggers", []).append(type(logger).__name__)


def log_exports(cfg: Any, summary: dict[str, Any], run_dir: Path) -> list[str]:
    """Log the run's export (`RUN/export/`) to every tracker of the run's config that keeps models
    (after `export=onnx`, and by `dlops export`); lines saying where each went."""
    said = []
    for node in (cfg.get("logger") or {}).values():
        cls = tracker_class(str((node or {}).get("_target_", ""))) if node else None
        if cls is not None and (line := cls.log_export(node, summary, run_dir / layout.EXPORT)):
            said.append(line)
    return said


def log_config(loggers: list, resolved: dict[str, Any], **extra: Any) -> None:
    """Log the resolved config plus `extra` facts (parameter count, seed, tags) to every logger."""
    params = {**resolved, **extra}
    for logger in loggers:
        logger.log_hyperparams(params)


def log_figures(loggers: list, figures: dict[str, Any], result: dict[str, Any], tag: str,
                step: int) -> None:
    """Log the evaluation figures to every tracker that takes figures."""
    for logger in loggers:
        if isinstance(logger, Tracker):
            logger.log_figures(figures, result, tag, step)


def finish(loggers: list, status: str, best: float | None = None) -> None:
    """End every logger's run with the run's outcome, so each run (each sweep job) is its own."""
    for logger in loggers:
        if isinstance(logger, Tracker):
            logger.finish(status, best)
        else:
            logger.finalize("success" if status == "completed" else "failed")
