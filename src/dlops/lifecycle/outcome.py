"""How a completed run ends: its summary, a word when its result is not a number, and a few
lines in the log. (A run that did not complete ends through `dlops.lifecycle.failures`.)"""

import logging
import math
from pathlib import Path
from typing import Any

from dlops.rundir import summary as run_summary
from dlops.rundir.metrics import stage

log = logging.getLogger("dlops.pipeline")


def record_completed(run_dir: Path, summary: dict[str, Any]) -> None:
    """Write the completed summary (with a warning for a non-finite result) and log the outcome."""
    run_summary.ended(summary, "completed")
    if warning := not_finite_warning(summary):  # completed, but its result is no number
        summary.setdefault("warnings", []).append(warning)
        log.warning(warning)
    run_summary.write(run_dir, summary)
    log_outcome(summary, run_dir)


def not_finite_warning(summary: dict[str, Any]) -> str | None:
    """What to say when a run completed but its monitored metric is NaN or infinite."""
    monitor = summary.get("monitor")
    values = [summary.get("best_metric"), (summary.get("last_metrics") or {}).get(monitor)]
    bad = [v for v in values if isinstance(v, float) and not math.isfinite(v)]
    if not bad:
        return None
    return (f"the run completed, but its monitored metric {monitor} is {bad[0]}: its result is not "
            "a number (summary.json writes null and lists it in non_finite). Lower "
            "model.optimizer.lr or check the data.")


def outcome_metrics(summary: dict[str, Any]) -> str:
    """`val_loss=0.2870, val_acc=0.9781, ..., test_acc=...`: the monitored metric first, then the
    other validation and test metrics, whatever separator their names use (`val/acc`)."""
    monitor, last = summary.get("monitor"), summary["last_metrics"]
    metrics = {**({monitor: last[monitor]} if monitor in last else {}), **last, **summary["test_metrics"]}
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                     if k == monitor or stage(k) in ("val", "test"))


def say_starting(what: str, run_dir: Path) -> None:
    """The run's first line, before torch, Lightning and the data load (seconds; 20 on a busy
    2-core machine): what starts, and where (relative to the current folder when inside it)."""
    shown = run_dir.resolve().relative_to(Path.cwd()) if run_dir.resolve().is_relative_to(Path.cwd()) \
        else run_dir
    log.info("%s %s; loading torch and Lightning", what, shown)


def took(summary: dict[str, Any]) -> str:
    """How long this attempt ran (`60.0s`), and for a resumed run all attempts together
    (`60.0s (138.8s in 3 attempts)`)."""
    attempts = summary.get("attempts") or []
    total = summary["duration_s"]
    if len(attempts) < 2:
        return f"{total:.1f}s"
    this = total - sum(a.get("duration_s") or 0.0 for a in attempts[:-1])
    return f"{this:.1f}s ({total:.1f}s in {len(attempts)} attempts)"


def log_outcome(summary: dict[str, Any], run_dir: Path) -> None:
    """Log the run's outcome in a few lines."""
    shown = outcome_metrics(summary)
    epochs = summary["epochs_completed"]
    log.info("completed in %s after %s epoch%s: %s", took(summary), epochs, "" if epochs == 1 else "s", shown)
    best = summary["best_metric"]
    log.info("best %s=%s, checkpoint %s", summary["monitor"], best if best is None else f"{best:.4f}",
             summary["best_checkpoint"])
    log.info("run dir: %s", run_dir)
