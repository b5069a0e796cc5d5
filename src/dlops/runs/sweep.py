"""The sweep summary: one row per job of a multirun, written at the sweep root and printed.

Light on purpose (no torch): Hydra loads it as a callback before any job starts.
"""

import csv
import math
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dlops.runs.summary import read_summary, write_json_atomic

COLUMNS = ("job", "status", "overrides", "monitor", "best", "duration_s", "run_dir", "error")
# why this process refused to run a job of the current multirun, by resolved run dir: a refused
# resume writes nothing into the run, so its summary cannot say that it was tried again
REFUSED: dict[str, str] = {}


def job_dirs(sweep_dir: str | Path) -> list[Path]:
    """The sweep's job dirs (Hydra writes `.hydra/` before the job's code runs), by job number."""
    dirs = [p.parent for p in Path(sweep_dir).glob("*/.hydra")]
    return sorted(dirs, key=lambda d: (int(d.name) if d.name.isdigit() else math.inf, d.name))


def job_row(run_dir: Path) -> dict[str, Any]:
    """One job as a row of the sweep summary; a job that never wrote `summary.json` is `missing`."""
    summary = read_summary(run_dir) or {}
    monitor = summary.get("monitor")
    best = summary.get("best_metric")
    if best is None and summary.get("status") == "completed":  # no checkpoint callback
        best = (summary.get("last_metrics") or {}).get(monitor)
    error = summary.get("error") or {}
    return {
        "job": int(run_dir.name) if run_dir.name.isdigit() else run_dir.name,
        "status": summary.get("status", "missing"),
        "overrides": list(summary.get("overrides") or []),
        "monitor": monitor,
        "best": best,
        "duration_s": summary.get("duration_s"),
        "run_dir": str(run_dir.resolve()),
        "error": " ".join((error.get("message") or "").split())[:300],
        "mode": summary.get("mode"),
    }


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed job with the best monitored value (by each job's `mode`), or None."""
    scored = [r for r in rows if r["status"] == "completed" and _finite(r["best"])]
    if not scored:
        return None
    sign = -1 if scored[0]["mode"] == "max" else 1
    return min(scored, key=lambda r: sign * r["best"])


def write_sweep_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Write `summary.csv`, `summary.md` and (if a job completed) `best.json` at the sweep root."""
    sweep_dir = Path(sweep_dir)
    rows = [job_row(d) for d in job_dirs(sweep_dir)]
    with open(sweep_dir / "summary.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**r, "overrides": " ".join(r["overrides"])} for r in rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r, c).replace("|", "\\|") for c in COLUMNS) + " |"
              for r in rows]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    best = best_row(rows)
    if best:
        summary = read_summary(best["run_dir"]) or {}
        write_json_atomic(sweep_dir / "best.json", {
            "job": best["job"], "run_dir": best["run_dir"], "monitor": best["monitor"],
            "mode": best["mode"], "best": best["best"], "overrides": best["overrides"],
            "best_checkpoint": summary.get("best_checkpoint"),
        })
    return rows


def print_sweep_summary(rows: list[dict[str, Any]], sweep_dir: Path) -> None:
    """The sweep summary as a table on the terminal (overrides shared by every job in the title),
    and the best job under it."""
    from rich.console import Console
    from rich.table import Table

    from dlops.runs.safe_text import rich_text  # config strings are text, never rich markup

    shared = set.intersection(*(set(r["overrides"]) for r in rows)) if rows else set()
    rows = [{**r, "overrides": [o for o in r["overrides"] if o not in shared]} for r in rows]
    table = Table(title=rich_text(f"sweep {sweep_dir} " + " ".join(sorted(shared))))
    shown = ("job", "status", "overrides", "best", "duration_s", "error")
    for column in shown:
        title = f"best {rows[0]['monitor']}" if column == "best" and rows else column
        table.add_column(rich_text(title), overflow="fold")
    for r in rows:
        table.add_row(*(rich_text(_cell(r, c)) for c in shown),
                      style=None if r["status"] == "completed" else "red")
    console = Console()
    console.print(table)
    best = best_row(rows)
    if best:
        console.print(rich_text(f"best: job {best['job']} {best['monitor']}={best['best']:.4f} "
                                f"({_cell(best, 'overrides')}) in {best['run_dir']}"))
    console.print(rich_text(f"sweep summary: {sweep_dir / 'summary.csv'}, {sweep_dir / 'summary.md'}"))


def _summary_text(run_dir: Path) -> str | None:
    try:
        return (run_dir / "summary.json").read_text()
    except OSError:
        return None


class SweepSummary(Callback):
    """Hydra callback: after a multirun, write and print the sweep summary, then exit 1 naming
    the jobs of this multirun that did not complete. Jobs already in a reused sweep dir that this
    multirun left untouched (an Optuna study's earlier trials, the completed jobs of a resumed
    sweep) are listed but do not count; a resumed job counts by what it did this time."""

    def __init__(self) -> None:
        self.earlier: dict[str, str | None] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.earlier = {d.name: _summary_text(d) for d in job_dirs(config.hydra.sweep.dir)}
        REFUSED.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            rows = write_sweep_summary(sweep_dir)
        except Exception as exc:  # noqa: BLE001 - the jobs' outcome still decides the exit code
            print(f"could not write the sweep summary in {sweep_dir}: {exc!r}", file=sys.stderr)
            try:
                rows = [job_row(d) for d in job_dirs(sweep_dir)]
            except Exception:  # noqa: BLE001 - nothing says the jobs completed: fail
                raise SystemExit(1) from None
        for r in rows:
            if r["run_dir"] in REFUSED:
                r.update(status="refused", error=REFUSED[r["run_dir"]])
        try:
            print_sweep_summary(rows, sweep_dir)
        except Exception as exc:  # noqa: BLE001 - Hydra would turn it into a warning and exit 0
            print(f"could not print the sweep summary: {exc!r}", file=sys.stderr)
        launched = [r for r in rows if (name := Path(r["run_dir"]).name) not in self.earlier
                    or _summary_text(Path(r["run_dir"])) != self.earlier[name]
                    or r["status"] == "refused"]
        failed = [r for r in launched if r["status"] != "completed"]
        if failed:
            names = "; ".join(f"job {r['job']} ({_cell(r, 'overrides')}): {r['status']}"
                              + (f": {r['error']}" if r["error"] else "") for r in failed)
            print(f"{len(failed)} of {len(launched)} jobs did not complete: {names}",
                  file=sys.stderr)
            raise SystemExit(1)  # not an Exception: Hydra's callback runner lets it through


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _cell(row: dict[str, Any], column: str) -> str:
    value = row[column]
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(value)
    if isinstance(value, float):
        return f"{value:.1f}" if column == "duration_s" else f"{value:.4f}"
    return str(value)
