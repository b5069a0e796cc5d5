"""The model summary a run shows at its start: layers and their parameter counts.

On a terminal, a table; in every log (train.log, a sweep's or SLURM's output) one line, so a
model of hundreds of layers never floods a log file.
"""

import logging
import sys
from typing import Any

log = logging.getLogger("dlops.pipeline")

MAX_DEPTH = 2  # `net`, `net.3`: deeper layers are counted in their parents
MAX_IN_LINE = 8  # layers named in the log line; the rest are counted


def layer_rows(model: Any) -> list[tuple[str, str, int]]:
    """(name, type, parameters) of the model's layers down to MAX_DEPTH that hold parameters."""
    rows = []
    for name, module in model.named_modules():
        if name and name.count(".") < MAX_DEPTH:
            count = sum(p.numel() for p in module.parameters())
            if count:
                rows.append((name, type(module).__name__, count))
    return rows


def summary_line(model: Any) -> str:
    """`model Classifier: 79,510 parameters (all trainable): net MLP 79,510, net.1 Linear 78,500, ...`"""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rows = layer_rows(model)
    shown = ", ".join(f"{name} {kind} {count:,}" for name, kind, count in rows[:MAX_IN_LINE])
    more = f", and {len(rows) - MAX_IN_LINE} more layers" if len(rows) > MAX_IN_LINE else ""
    which = "all trainable" if trainable == total else f"{trainable:,} trainable"
    line = f"model {type(model).__name__}: {total:,} parameters ({which})"
    return f"{line}: {shown}{more}" if rows else line


def summary_table(model: Any) -> str:
    """The layers as an aligned table, with the total."""
    rows = [("layer", "type", "parameters"),
            *((name, kind, f"{count:,}") for name, kind, count in layer_rows(model))]
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rows.append(("total", "", f"{total:,} ({trainable:,} trainable)"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"  {a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}".rstrip() for a, b, c in rows)


def show_model_summary(model: Any) -> None:
    """Print the table on a terminal, and log the one-line summary (which reaches train.log)."""
    if sys.stdout.isatty():
        print(summary_table(model), flush=True)
    log.info(summary_line(model))
