"""`dlops report --html`: one self-contained page (images inlined, every string escaped, tables sortable)."""

import base64
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from pathlib import Path

from dlops.readers.report import Report, Table
from dlops.readers.report_sort import script_source, script_tag
from dlops.readers.report_text import display_rows, is_number_column, shared_text, short_path
from dlops.rundir.safe_read import read_png

RUN_PLOTS = {"confusion matrix": "plots/confusion_matrix.png", "ROC": "plots/roc.png"}
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.completed { color: #1a7f37; } .failed, .diverged { color: #cf222e; }
.killed, .lost, .interrupted { color: #9a6700; } .running { color: #0969da; } .unknown { color: #777; }
.unreadable { color: #cf222e; }
figure { display: inline-block; margin: 0 1em 1em 0; } img { max-width: 100%; }
pre { background: #f6f6f6; padding: 0.5em; white-space: pre-wrap; }
"""


def render_html(report: Report, curves: Mapping[str, bytes], labels: Sequence[str]) -> str:
    """The report as one HTML page; `curves` maps metric -> PNG, `labels` name the runs."""
    parts = [
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>",
        # nothing may be fetched, and no script runs but the table sorter: the page is complete on its own
        "<meta http-equiv='Content-Security-Policy' "
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src {script_source()}\">",
        f"<title>dlops report</title><style>{STYLE}</style></head><body>",
        f"<h1>dlops report</h1><p>{len(report.runs)} runs, made "
        f"{escape(datetime.now().astimezone().isoformat(timespec='seconds'))}. "
        f"Shared overrides: <code>{escape(shared_text(report))}</code></p>",
        _table(report.leaderboard),
        _table(report.groups) if report.groups_merge else "",  # groups of one run: the leaderboard again
        "<h2>Learning curves</h2>",
        *(_image(png, metric) for metric, png in curves.items()),
        _runs(report, labels),
        script_tag(),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def _table(table: Table) -> str:
    headers, rows = display_rows(table)
    numeric = [is_number_column(h) for h in headers]
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for header, cell, is_number in zip(headers, row, numeric, strict=True):
            css = cell if header == "status" else "num" if is_number else ""
            cells.append(f"<td class='{escape(css)}'>{escape(cell)}</td>" if css
                         else f"<td>{escape(cell)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f"<h2>{escape(table.title)}</h2>\n<table><thead><tr>{head}</tr></thead>"
            f"<tbody>\n{chr(10).join(body)}\n</tbody></table>")


def _image(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{escape(caption)}'>"
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _runs(report: Report, labels: Sequence[str]) -> str:
    """A section per run that has evaluation plots or an error message."""
    sections = []
    for run, label in zip(report.runs, labels, strict=True):
        plots = {name: png for name, file in RUN_PLOTS.items() if (png := _read(run.path / file, run.path))}
        if not plots and not run.error:
            continue
        overrides = " ".join(f"{k}={v}" for k, v in run.overrides.items()) or "none"
        sections.append(
            f"<section><h3>{escape(label)}</h3>"
            f"<p><span class='{escape(run.status)}'>{escape(run.status)}</span> · "
            f"<code>{escape(short_path(run.path))}</code><br>"
            f"overrides: <code>{escape(overrides)}</code></p>"
            + (f"<pre>{escape(run.error)}</pre>" if run.error else "")
            + "".join(_image(png, name) for name, png in plots.items())
            + "</section>")
    return "<h2>Runs</h2>\n" + "\n".join(sections) if sections else ""


def _read(path: Path, run_dir: Path) -> bytes | None:
    """A PNG of the run dir, or None: absent (older runs, failed runs), not a PNG, or not to be
    read (a symlink out of the run dir, a device, too large; see dlops.rundir.safe_read)."""
    return read_png(path, run_dir)
