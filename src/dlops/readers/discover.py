"""Find run directories under the paths a person names, and load what each says about itself.

A run dir is a folder holding `summary.json` or `.hydra/`. Only the standard library (and
PyYAML for runs without a summary) is imported here, so reading hundreds of runs is quick.
"""

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from dlops.errors import ConfigError
from dlops.rundir import layout, liveness, overrides
from dlops.rundir import summary as run_summary

METRICS_CSV = layout.METRICS_CSV


@dataclass
class Run:
    """What one run dir says about its run; missing facts are None or empty."""

    path: Path
    status: str  # as recorded; "killed" if it says running but its process is gone; "unknown"
    overrides: dict[str, str]
    monitor: str = "val_loss"
    mode: str = "min"
    epochs: int | None = None
    max_epochs: int | None = None
    best_metric: float | None = None  # of `monitor`, as the checkpoint callback saw it
    last_metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    duration_s: float | None = None
    error: str | None = None

    @cached_property
    def curves(self) -> dict[str, list[tuple[int, float]]]:
        """Per metric, the (epoch, value) points of `csv/metrics.csv` (empty when absent)."""
        return read_curves(self.path / METRICS_CSV)


def is_run_dir(path: Path) -> bool:
    return (path / layout.SUMMARY).is_file() or (path / layout.HYDRA_DIR).is_dir()


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run dir at or below `paths`, each once, in natural order (job 2 before job 10)."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if not path.is_dir():
            problem = "is not a folder" if path.exists() else "does not exist"
            raise ConfigError(f"{path} {problem}: name a run dir, a sweep dir or a folder of them")
        for run_dir in _walk(path):
            found.setdefault(run_dir.resolve(), None)
    return sorted(found, key=_natural_key)


def _walk(path: Path) -> Iterable[Path]:
    if is_run_dir(path):  # a run dir's own subfolders (checkpoints, wandb, ...) hold no runs
        yield path
        return
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:  # unreadable folder: nothing to report from it
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            yield from _walk(Path(entry.path))


def _natural_key(path: Path) -> list[Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", str(path)) if part]


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Load every run found at or below `paths`; raise ConfigError when there is none."""
    paths = list(paths)
    runs = [load_run(run_dir) for run_dir in find_run_dirs(paths)]
    if not runs:
        names = ", ".join(map(str, paths))
        raise ConfigError(f"no run dirs found in {names} (a run dir holds summary.json or .hydra/)")
    return runs


def load_run(run_dir: Path) -> Run:
    """The run in `run_dir`, from its summary.json, or from .hydra/ and its CSV for older runs."""
    summary = run_summary.read(run_dir)
    if summary is None:
        return _load_without_summary(run_dir)
    status = summary.get("status") or "unknown"
    if status == "running" and liveness.writer_state(summary) == "dead":
        status = "killed"
    return Run(
        path=run_dir,
        status=status,
        overrides=overrides.as_dict(summary.get("overrides") or _hydra_overrides(run_dir)),
        monitor=summary.get("monitor") or "val_loss",
        mode=summary.get("mode") or "min",
        epochs=summary.get("epochs_completed"),
        max_epochs=summary.get("max_epochs"),
        best_metric=_number(summary.get("best_metric")),
        last_metrics=_numbers(summary.get("last_metrics")),
        test_metrics=_numbers(summary.get("test_metrics")),
        duration_s=_duration(summary),
        error=_error_text(summary.get("error")),
    )


def _load_without_summary(run_dir: Path) -> Run:
    """A run from before summary.json (or killed before writing it): facts from .hydra/ and CSV."""
    config = _read_yaml(run_dir / ".hydra" / "config.yaml") or {}
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    run = Run(path=run_dir, status="unknown", overrides=overrides.as_dict(_hydra_overrides(run_dir)),
              monitor=str(config.get("monitor") or "val_loss"),
              mode=str(config.get("mode") or "min"), max_epochs=trainer.get("max_epochs"))
    for metric, points in run.curves.items():
        target = run.test_metrics if metric.startswith("test_") else run.last_metrics
        target[metric] = points[-1][1]
    epochs = {epoch for epoch, _ in run.curves.get(run.monitor, [])}
    run.epochs = len(epochs) if epochs else None
    return run


def _hydra_overrides(run_dir: Path) -> list[str]:
    overrides = _read_yaml(run_dir / ".hydra" / "overrides.yaml")
    return [str(o) for o in overrides] if isinstance(overrides, list) else []


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def read_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Per metric column of a Lightning CSVLogger file, its (epoch, value) points in file order."""
    curves: dict[str, list[tuple[int, float]]] = {}
    try:
        with open(path, newline="") as file:
            for row in csv.DictReader(file):
                epoch = _number(row.get("epoch"))
                for metric, text in row.items():
                    value = _number(text)
                    if metric not in ("epoch", "step") and metric and value is not None:
                        curves.setdefault(metric, []).append((int(epoch or 0), value))
    except (OSError, csv.Error, UnicodeDecodeError):
        pass
    return curves


def _number(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _numbers(values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        return {}
    numbers = {str(k): _number(v) for k, v in values.items()}
    return {k: v for k, v in numbers.items() if v is not None}


def _error_text(error: Any) -> str | None:
    if isinstance(error, dict):
        return error.get("message") or error.get("type")
    return str(error) if error else None


def _duration(summary: dict[str, Any]) -> float | None:
    """Recorded duration; for a run that never ended, the time from start to its last update."""
    if summary.get("duration_s") is not None:
        return _number(summary["duration_s"])
    try:
        start = datetime.fromisoformat(summary["started_at"])
        return (datetime.fromisoformat(summary["updated_at"]) - start).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None
