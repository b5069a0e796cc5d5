"""The newest `dlops eval` result of a run, as `dlops report` shows it (standard library only)."""

import json
import math
from pathlib import Path

from dlops.rundir import layout

MAX_BYTES = 1 << 20  # a metrics.json is a few hundred bytes; anything larger is not one


def latest_eval_metrics(run_dir: Path) -> dict[str, float]:
    """Metrics of the newest `RUN/eval/<time>/metrics.json` (by folder name), or {}.

    Never follows a link, and skips a file that is too large or not the JSON `dlops eval` writes.
    """
    evals = run_dir / layout.EVAL
    if evals.is_symlink() or not evals.is_dir():
        return {}
    for folder in sorted(evals.iterdir(), key=lambda p: p.name, reverse=True):
        file = folder / layout.EVAL_METRICS
        if folder.is_symlink() or file.is_symlink() or not file.is_file() or file.stat().st_size > MAX_BYTES:
            continue
        try:
            metrics = json.loads(file.read_text(encoding="utf-8")).get("metrics")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(metrics, dict):
            return {f"eval_{k}": float(v) for k, v in metrics.items()
                    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
    return {}
