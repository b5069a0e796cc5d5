"""The report as text: rich tables in the terminal, CSV, Markdown and JSON."""

import csv
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlops.readers.discover import Run
from dlops.readers.report import Report, Table
from dlops.rundir.metrics import stage
from dlops.rundir.safe_text import printable

STATUS_STYLES = {"completed": "green", "failed": "red", "diverged": "red", "killed": "yellow",
                 "lost": "yellow", "pruned": "yellow", "interrupted": "yellow", "running": "cyan",
                 "unknown": "dim", "unreadable": "red"}


def is_number_column(header: str) -> bool:
    """Whether a column holds numbers (right-aligned): scores, test and eval metrics, counts, times."""
    return (header.startswith(("best_", "final_", "eval_", "duration")) or header == "n"
            or stage(header) is not None)


def display_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of text for people: metrics to 4 decimals, mean ± std, short paths."""
    columns = [c for c in table.columns if c != "max_epochs" and not c.endswith("_std")]
    headers = [printable(c[:-5] if c.endswith("_mean") else c) for c in columns]
    cells = []
    for row in table.rows:
        line = []
        for column in columns:
            value = row.get(column)
            if column == "epochs":
                line.append(_epochs(value, row.get("max_epochs")))
            elif column.endswith("_mean"):
                line.append(_mean_std(column[:-5], value, row.get(column[:-5] + "_std")))
            else:
                line.append(_text(column, value))
        cells.append([printable(cell) for cell in line])  # escape sequences show as text
    return headers, cells


def _text(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "run_dir":
        return short_path(value)
    if column.startswith("duration"):
        return _duration(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _mean_std(column: str, mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    if std is None:
        return _text(column, mean)
    return f"{_text(column, mean)} ± {_text(column, std)}"


def _epochs(done: Any, total: Any) -> str:
    if done is None:
        return "-"
    return f"{done}/{total}" if total is not None else str(done)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def short_path(path: str | Path) -> str:
    """`path` relative to the current folder when it lies inside it, else as given."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def run_label(run: Run, varying: Sequence[str]) -> str:
    """A run's name in legends: its varying overrides, or its path when nothing varies."""
    label = " ".join(f"{k}={value}" for k in varying if (value := run.setting(k)) is not None)
    return label or short_path(run.path)


def shared_text(report: Report) -> str:
    return printable(" ".join(f"{k}={v}" for k, v in report.shared.items()) or "none")


def to_csv(table: Table) -> str:
    """The table as CSV with raw values (empty cell = missing)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in table.columns])
    return buffer.getvalue()


def to_markdown(table: Table) -> str:
    """The table as a Markdown pipe table under a bold title."""
    headers, cells = display_rows(table)
    def line(items: Sequence[str]) -> str:
        return "| " + " | ".join(_md_cell(item) for item in items) + " |"
    rows = [line(headers), line(["---"] * len(headers)), *(line(row) for row in cells)]
    return f"**{_md_cell(table.title)}**\n\n" + "\n".join(rows) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def to_json(report: Report) -> str:
    """The whole report as JSON: metrics, overrides, runs and groups with raw values."""
    document = {
        "metrics": report.modes,
        "shared_overrides": report.shared,
        "varying_overrides": report.varying,
        "runs": report.leaderboard.rows,
        "groups": report.groups.rows,
        "unreadable": {str(r.path): r.error for r in report.runs if r.status == "unreadable"},
    }
    return json.dumps(_finite(document), indent=2) + "\n"


def _finite(value: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def render_text(report: Report, fmt: str, grouped: bool) -> str:
    """`csv`, `md` or `json` text: the groups when asked for, else the leaderboard (md adds
    the groups when they merge runs; json always holds both)."""
    if fmt == "json":
        return to_json(report)
    if fmt == "csv":
        return to_csv(report.groups if grouped else report.leaderboard)
    parts = [] if grouped else [to_markdown(report.leaderboard)]
    if grouped or report.groups_merge:
        parts.append(to_markdown(report.groups))
    parts.append(f"shared overrides: {_md_cell(shared_text(report))}\n")
    parts += [f"- {_md_cell(line)}\n" for line in unreadable_lines(report)]
    return "\n".join(parts)


def unreadable_lines(report: Report) -> list[str]:
    """`unreadable: RUN_DIR: why` for each run whose files could not be used."""
    return [printable(f"unreadable: {short_path(run.path)}: {run.error}")
            for run in report.runs if run.status == "unreadable"]


def print_rich(report: Report, grouped: bool) -> None:
    """Print the leaderboard (and the groups when they merge runs) as rich tables; with
    `grouped` only the groups."""
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    # piped output keeps whole rows (no wrapping to 80 columns)
    console = Console(width=None if sys.stdout.isatty() else 10_000)
    tables = [report.groups] if grouped else [report.leaderboard]
    if not grouped and report.groups_merge:
        tables.append(report.groups)
    for table in tables:
        headers, cells = display_rows(table)
        rich_table = RichTable(title=Text(printable(table.title)), title_justify="left")
        for header in headers:
            rich_table.add_column(Text(header), justify="right" if is_number_column(header) else "left")
        for line in cells:
            styles = [STATUS_STYLES.get(cell, "") if header == "status" else ""
                      for header, cell in zip(headers, line, strict=True)]
            rich_table.add_row(*map(Text, line, styles))
        console.print(rich_table)
    console.print(Text(f"shared overrides: {shared_text(report)}"))
    for line in unreadable_lines(report):
        console.print(Text(line, style="red"))
