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

from dlops.errors import ConfigError
from dlops.lifecycle.argv import cannot_create
from dlops.readers.discover import load_run
from dlops.readers.report import best_value
from dlops.rundir import atomic, layout, lock, refused
from dlops.rundir import summary as run_summary
from dlops.rundir.safe_text import printable

COLUMNS = ("job", "status", "overrides", "monitor", "best", "duration_s", "run_dir", "error")


def job_dirs(sweep_dir: str | Path) -> list[Path]:
    """The sweep's job dirs (Hydra writes `.hydra/` before the job's code runs), by job number."""
    dirs = [p.parent for p in Path(sweep_dir).glob("*/.hydra")]
    return sorted(dirs, key=lambda d: (int(d.name) if d.name.isdigit() else math.inf, d.name))


def job_row(run_dir: Path) -> dict[str, Any]:
    """One job as a row of the sweep summary, read as `dlops report` reads it (one rule for
    "best": see `dlops.readers.report.best_value`); a job that never wrote summary.json is
    `missing`, one that says running but whose process is gone is `killed`."""
    run = load_run(run_dir)
    return {
        "job": int(run_dir.name) if run_dir.name.isdigit() else run_dir.name,
        "status": run.status if (run_dir / layout.SUMMARY).is_file() else "missing",
        "overrides": [f"~{k}" if v == "~" else f"{k}={v}" for k, v in run.overrides.items()],
        "monitor": run.monitor,
        "best": best_value(run, run.monitor, run.mode),
        "duration_s": run.duration_s,
        "run_dir": str(run_dir.resolve()),
        "error": " ".join((run.error or "").split())[:300],
        "mode": run.mode,
    }


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed job with the best monitored value (by each job's `mode`), or None."""
    scored = [r for r in rows if r["status"] == "completed" and _finite(r["best"])]
    if not scored:
        return None
    sign = -1 if scored[0]["mode"] == "max" else 1
    return min(scored, key=lambda r: sign * r["best"])


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """A row per job; a job whose resume this multirun refused (`refused.json`) is `refused`,
    unless it completed all the same (another process ran it): a row says what the job is."""
    rows = [job_row(d) for d in job_dirs(sweep_dir)]
    reasons = refused.read(sweep_dir)
    for r in rows:
        if r["run_dir"] in reasons and r["status"] != "completed":
            r.update(status="refused", error=reasons[r["run_dir"]])
    return rows


def write_sweep_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Write `summary.csv`, `summary.md` and (if a job completed) `best.json` at the sweep root.

    A job whose resume this multirun refused (`refused.json`) is listed as `refused`, with why.
    """
    sweep_dir = Path(sweep_dir)
    rows = sweep_rows(sweep_dir)
    with open(sweep_dir / layout.SWEEP_CSV, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**r, "overrides": " ".join(r["overrides"])} for r in rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r, c).replace("|", "\\|") for c in COLUMNS) + " |"
              for r in rows]
    (sweep_dir / layout.SWEEP_MD).write_text("\n".join(lines) + "\n")
    best = best_row(rows)
    if best:
        summary = run_summary.read(best["run_dir"]) or {}
        atomic.write_json(sweep_dir / layout.BEST, {
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
    from rich.text import Text

    def text(value: Any) -> Text:  # config strings are text: never rich markup, never escapes
        return Text(printable(value))

    shared = set.intersection(*(set(r["overrides"]) for r in rows)) if rows else set()
    rows = [{**r, "overrides": [o for o in r["overrides"] if o not in shared]} for r in rows]
    table = Table(title=text(f"sweep {sweep_dir} " + " ".join(sorted(shared))))
    shown = ("job", "status", "overrides", "best", "duration_s", "error")
    for column in shown:
        title = f"best {rows[0]['monitor']}" if column == "best" and rows else column
        table.add_column(text(title), overflow="fold")
    for r in rows:
        table.add_row(*(text(_cell(r, c)) for c in shown),
                      style=None if r["status"] == "completed" else "yellow" if r["status"] == "pruned"
                      else "red")
    # not a terminal (a log file, CI): whole rows, never wrapped at 80 columns
    console = Console(width=None if sys.stdout.isatty() else 10_000)
    console.print(table)
    best = best_row(rows)
    if best:
        console.print(text(f"best: job {best['job']} {best['monitor']}={best['best']:.4f} "
                           f"({_cell(best, 'overrides')}) in {best['run_dir']}"))
    console.print(text(f"sweep summary: {sweep_dir / layout.SWEEP_CSV}, {sweep_dir / layout.SWEEP_MD}"))


def _summary_text(run_dir: Path) -> str | None:
    try:
        return (run_dir / layout.SUMMARY).read_text()
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
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:  # one sweep per sweep dir, as one process per run dir; held until this process ends
            sweep_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire(sweep_dir, "sweep dir")
        except ConfigError as exc:  # SystemExit: Hydra turns an Exception here into a warning
            raise SystemExit(f"{Path(sys.argv[0]).name}: error: {exc}") from None
        except OSError as exc:
            raise SystemExit(cannot_create(str(sweep_dir), exc)) from None
        self.earlier = {d.name: _summary_text(d) for d in job_dirs(sweep_dir)}
        refused.clear(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            rows = write_sweep_summary(sweep_dir)
        except Exception as exc:  # noqa: BLE001 - the jobs' outcome still decides the exit code
            print(f"could not write the sweep summary in {sweep_dir}: {exc!r}", file=sys.stderr)
            try:
                rows = sweep_rows(sweep_dir)
            except Exception:  # noqa: BLE001 - nothing says the jobs completed: fail
                raise SystemExit(1) from None
        try:
            print_sweep_summary(rows, sweep_dir)
        except Exception as exc:  # noqa: BLE001 - Hydra would turn it into a warning and exit 0
            print(f"could not print the sweep summary: {exc!r}", file=sys.stderr)
        launched = [r for r in rows if (name := Path(r["run_dir"]).name) not in self.earlier
                    or _summary_text(Path(r["run_dir"])) != self.earlier[name]
                    or r["status"] == "refused"]
        failed = [r for r in launched if r["status"] not in ("completed", "pruned")]  # pruned: by design
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


def current_sweep_dir() -> Path | None:
    """The sweep dir when this process runs one job of a multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir)
    return None
