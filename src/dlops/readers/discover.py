"""Find run directories under the paths a person names, and load what each says about itself.

A run dir is a folder holding `summary.json` or `.hydra/`. Only the standard library (and
PyYAML for runs without a summary) is imported here, so reading hundreds of runs is quick.
"""

import csv
import io
import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from dlops.errors import ConfigError
from dlops.readers.evals import latest_eval_metrics
from dlops.rundir import layout, liveness, overrides
from dlops.rundir.metrics import infer_mode, stage
from dlops.rundir.safe_read import MAX_CSV, MAX_JSON, MAX_YAML, Unreadable, check_inside, read_inside

METRICS_CSV = layout.METRICS_CSV
SUMMARY_FILE = layout.SUMMARY


@dataclass
class Run:
    """What one run dir says about its run; missing facts are None or empty."""

    path: Path
    status: str  # as recorded; "killed" if it says running but its process is gone, "lost" if its
    # SLURM job no longer runs it (see rundir.liveness); "unknown";
    # "unreadable": its files are damaged or not to be read (`error` says why)
    overrides: dict[str, str]
    monitor: str = "val_loss"
    mode: str = "min"
    epochs: int | None = None
    max_epochs: int | None = None
    best_metric: float | None = None  # of `monitor`, as the checkpoint callback saw it
    last_metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)  # the newest `dlops eval`, eval_<metric>
    duration_s: float | None = None
    error: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config, flat (summary.json)

    def setting(self, key: str) -> str | None:
        """The value the run used for `key` (`trainer.max_epochs`, `model`), as text: from its
        resolved config, so a default shows as its value; else as its override wrote it."""
        if key in self.config:
            return config_text(self.config[key])
        return self.overrides.get(key)

    @cached_property
    def curves(self) -> dict[str, list[tuple[int, float]]]:
        """Per metric, the (epoch, value) points of `csv/metrics.csv` (empty when absent; read
        when first asked for: a leaderboard from summaries alone never parses the CSVs)."""
        try:
            return read_curves(self.path / METRICS_CSV, self.path)
        except Unreadable:  # checked in load_run already; changed since: no curves
            return {}


def config_text(value: Any) -> str:
    """A config value written as on the command line: `0.001`, `true`, `null`, `[100,50]`."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def is_run_dir(path: Path) -> bool:
    return (path / SUMMARY_FILE).is_file() or (path / layout.HYDRA_DIR).is_dir()


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
    """The run in `run_dir`, from its summary.json, or from .hydra/ and its CSV for older runs.

    A damaged run dir gives a run with status `unreadable` and the reason as its error: one bad
    run never stops a report of many.
    """
    try:
        _check_csv(run_dir)
        return _load_run(run_dir)
    except Unreadable as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - whatever the files hold, the report goes on
        reason = f"{type(exc).__name__}: {exc}"[:300]
    run = Run(path=run_dir, status="unreadable", overrides={}, error=reason)
    run.__dict__["curves"] = {}
    return run


def _check_csv(run_dir: Path) -> None:
    """Raise Unreadable for a metrics.csv that is no regular file inside the run dir, or too large
    (a stat, no read: the CSV is parsed only when curves are asked for)."""
    real = check_inside(run_dir / METRICS_CSV, run_dir)
    if real is None:
        return
    try:
        info = os.stat(real)
    except OSError as exc:
        raise Unreadable(f"{METRICS_CSV} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise Unreadable(f"{METRICS_CSV} is not a regular file")
    if info.st_size > MAX_CSV:
        raise Unreadable(f"{METRICS_CSV} is larger than {MAX_CSV >> 20} MiB")


# summary.json fields a report reads, and the types they must have when present
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "status": (str,), "monitor": (str,), "mode": (str,), "overrides": (list,),
    "epochs_completed": (int,), "max_epochs": (int,), "best_metric": (int, float),
    "last_metrics": (dict,), "test_metrics": (dict,), "duration_s": (int, float),
    "started_at": (str,), "updated_at": (str,), "started_at_unix": (int, float),
    "attempts": (list,), "error": (dict, str), "pid": (int,), "host": (str,), "config": (dict,),
}


def read_run_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary.json, checked; None when absent or cut short (the run is then read
    from .hydra/ and its CSV, as older runs are); Unreadable saying what is wrong otherwise."""
    data = read_inside(run_dir / SUMMARY_FILE, run_dir, MAX_JSON)
    try:
        summary = None if data is None else json.loads(data)
    except ValueError:
        return None
    except RecursionError:
        raise Unreadable("summary.json is nested too deeply") from None
    if summary is None:
        return None
    if not isinstance(summary, dict):
        raise Unreadable(f"summary.json holds a {type(summary).__name__}, not an object")
    for key, types in FIELD_TYPES.items():
        value = summary.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            raise Unreadable(f"summary.json's {key} is a {type(value).__name__}, "
                             f"not a {' or '.join(t.__name__ for t in types)}")
    if not all(isinstance(o, str) for o in summary.get("overrides") or []):
        raise Unreadable("summary.json's overrides are not all strings")
    if not all(isinstance(a, dict) for a in summary.get("attempts") or []):
        raise Unreadable("summary.json's attempts are not all objects")
    _restore_non_finite(summary)
    return summary


def _restore_non_finite(summary: dict[str, Any]) -> None:
    """Put back the NaN and infinite metrics that summary.json lists in `non_finite` (strict JSON
    holds null in their place): a diverged run's final loss is NaN, not missing."""
    listed = summary.get("non_finite")
    for item in listed if isinstance(listed, list) else []:
        name, _, text = str(item).rpartition("=") if "=" in str(item) else (str(item), "", "nan")
        section, _, metric = name.partition(".")
        value = _number(text)
        if section in ("last_metrics", "test_metrics") and isinstance(summary.get(section), dict) \
                and metric and value is not None and summary[section].get(metric) is None:
            summary[section][metric] = value


def _load_run(run_dir: Path) -> Run:
    summary = read_run_summary(run_dir)
    if summary is None:
        return _load_without_summary(run_dir)
    status, error = summary.get("status") or "unknown", _error_text(summary.get("error"))
    writer = liveness.writer_state(summary) if status == "running" else None
    if writer == "dead":
        status = "killed"
    elif writer == "lost":
        status = "lost"
        slurm = summary.get("slurm") if isinstance(summary.get("slurm"), dict) else {}
        error = (f"SLURM job {slurm.get('job')} no longer runs the attempt that wrote this on "
                 f"{summary.get('host')} (its node went down, or the job was requeued or ended)")
    return Run(
        path=run_dir,
        status=status,
        overrides=overrides.as_dict(summary.get("overrides") or _hydra_overrides(run_dir)),
        monitor=(monitor := summary.get("monitor") or "val_loss"),
        mode=_mode(summary.get("mode"), monitor),
        epochs=summary.get("epochs_completed"),
        max_epochs=summary.get("max_epochs"),
        best_metric=_number(summary.get("best_metric")),
        last_metrics=_numbers(summary.get("last_metrics")),
        test_metrics=_numbers(summary.get("test_metrics")),
        eval_metrics=latest_eval_metrics(run_dir),
        duration_s=_duration(summary),
        error=error,
        config={str(k): v for k, v in (summary.get("config") or {}).items()},
    )


def _mode(recorded: Any, monitor: str) -> str:
    """The run's own `min`/`max`; for `auto` (or nothing recorded) the direction its monitor's
    name tells (`dlops.rundir.metrics`), else `min`."""
    return recorded if recorded in ("min", "max") else infer_mode(monitor) or "min"


def _load_without_summary(run_dir: Path) -> Run:
    """A run from before summary.json (or killed before writing it): facts from .hydra/ and CSV."""
    config = _read_yaml(run_dir / layout.HYDRA_CONFIG, run_dir)
    config = config if isinstance(config, dict) else {}
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    max_epochs = trainer.get("max_epochs")
    monitor = _text(config.get("monitor"), "val_loss")
    run = Run(path=run_dir, status="unknown", overrides=overrides.as_dict(_hydra_overrides(run_dir)),
              monitor=monitor, mode=_mode(config.get("mode"), monitor),
              max_epochs=max_epochs if isinstance(max_epochs, int) else None)
    for metric, points in run.curves.items():
        target = run.test_metrics if stage(metric) == "test" else run.last_metrics
        target[metric] = points[-1][1]
    epochs = {epoch for epoch, _ in run.curves.get(run.monitor, [])}
    run.epochs = len(epochs) if epochs else None
    return run


def _hydra_overrides(run_dir: Path) -> list[str]:
    listed = _read_yaml(run_dir / layout.HYDRA_OVERRIDES, run_dir)
    return [o for o in listed if isinstance(o, str)] if isinstance(listed, list) else []


def _read_yaml(path: Path, run_dir: Path) -> Any:
    """A YAML file of the run dir, or None when it is absent, damaged or not to be read."""
    import yaml

    try:
        data = read_inside(path, run_dir, MAX_YAML)
        return None if data is None else yaml.safe_load(data.decode("utf-8"))
    except (Unreadable, yaml.YAMLError, UnicodeDecodeError, RecursionError):
        return None


def _text(value: Any, default: str) -> str:
    return value if isinstance(value, str) and value else default


MAX_EPOCH = 10**7  # an epoch number beyond any run: a damaged row


def read_curves(path: Path, run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Per metric column of a Lightning CSVLogger file, its (epoch, value) points in file order.

    Rows without a whole, plausible epoch number and values that are no number are skipped;
    a file that is absent, damaged or not to be read gives no curves (Unreadable propagates).
    """
    data = read_inside(path, run_dir, MAX_CSV)
    curves: dict[str, list[tuple[int, float]]] = {}
    if data is None:
        return curves
    try:
        for row in csv.DictReader(io.StringIO(data.decode("utf-8", errors="replace"), newline="")):
            epoch = _number(row.get("epoch"))
            if epoch is None or not epoch.is_integer() or not 0 <= epoch <= MAX_EPOCH:
                continue
            for metric, text in row.items():
                value = _number(text)
                if isinstance(metric, str) and metric not in ("epoch", "step", "") and value is not None:
                    curves.setdefault(metric, []).append((int(epoch), value))
    except csv.Error as exc:
        raise Unreadable(f"{path.name} is not CSV ({exc})") from None
    return curves


def _number(value: Any) -> float | None:
    if value in (None, "") or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _numbers(values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        return {}
    numbers = {str(k): _number(v) for k, v in values.items()}
    return {k: v for k, v in numbers.items() if v is not None}


def _error_text(error: Any) -> str | None:
    if isinstance(error, dict):
        error = error.get("message") or error.get("type")
    return str(error)[:2000] if error else None


def _duration(summary: dict[str, Any]) -> float | None:
    """Recorded duration; for a run that never ended, the time from start to its last update."""
    if summary.get("duration_s") is not None:
        return _number(summary["duration_s"])
    try:
        start = datetime.fromisoformat(summary["started_at"])
        return (datetime.fromisoformat(summary["updated_at"]) - start).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None
