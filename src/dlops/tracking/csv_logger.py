"""CSV metrics that survive a crash and continue on resume: Lightning's CSVLogger, made safe.

Lightning's writer deletes an existing `metrics.csv` and rewrites the header non-atomically.
dlops' writer (`MetricsWriter`) writes each row as it is logged, rewrites the file only through a
temp file + rename, and on resume keeps exactly the rows that the checkpoint it resumes from had
seen (`keep_rows`), so the resumed run appends without duplicated or missing epochs.
"""

import csv
import io
import json
from pathlib import Path
from typing import Any

from lightning_utilities.core.rank_zero import rank_zero_only  # the one both Lightning packages set

from dlops.rundir import atomic, layout
from dlops.tracking.tracker import ResumePoint, Tracker


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows of a metrics CSV (empty when the file does not exist)."""
    if not path.is_file():
        return [], []
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def write_rows(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    """Atomically replace `path` with `header` and `rows`."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_bytes(path, text.getvalue().encode())


class MetricsWriter:
    """What Lightning's CSVLogger writes through (`log_hparams`, `log_metrics`, `save`), made safe:
    an existing metrics.csv is kept (cut back to `keep_rows` rows) and appended to, its header is
    rewritten through a temp file and rename when a new metric appears, and hparams.yaml is
    replaced whole. (Lightning's own writer deletes an existing metrics.csv and rewrites the header
    in place; this one uses none of its private hooks.)"""

    def __init__(self, log_dir: str, keep_rows: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_file_path = str(self.log_dir / layout.METRICS_CSV.name)
        self.hparams: dict[str, Any] = {}
        self.metrics: list[dict[str, Any]] = []  # logged, not yet written
        header, rows = read_rows(Path(self.metrics_file_path))
        if keep_rows is not None and len(rows) > keep_rows:
            rows = rows[:keep_rows]
            write_rows(Path(self.metrics_file_path), header, rows)
        self.metrics_keys = sorted(header)
        self.rows = len(rows)

    def log_hparams(self, params: dict[str, Any]) -> None:
        import yaml

        self.hparams.update(params)
        plain = json.loads(json.dumps(self.hparams, default=str))  # YAML of plain values only
        text = yaml.safe_dump(plain, sort_keys=False)
        atomic.write_bytes(self.log_dir / layout.CSV_HPARAMS.name, text.encode())

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row = {k: v.item() if hasattr(v, "item") else v for k, v in metrics.items()}
        row["step"] = len(self.metrics) if step is None else step
        self.metrics.append(row)

    def save(self) -> None:
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        new = set().union(*self.metrics) - set(self.metrics_keys)
        if new:
            self.metrics_keys = sorted([*self.metrics_keys, *new])
            if path.is_file():
                write_rows(path, self.metrics_keys, read_rows(path)[1])
        exists = path.is_file()
        with open(path, "a" if exists else "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            if not exists:
                writer.writeheader()
            writer.writerows(self.metrics)
        self.rows += len(self.metrics)
        self.metrics = []


class CSVLogger(Tracker):
    """`<save_dir>/<name>/metrics.csv`, one row per logging call, written at once.

    `keep_rows`: when resuming, the number of rows the checkpoint had seen; later rows (logged
    after that checkpoint by the attempt that died) are dropped before new ones are appended.
    """

    lightning_base = "loggers.CSVLogger"

    def __init__(self, save_dir: str, name: str = "csv", version: str = "", prefix: str = "",
                 keep_rows: int | None = None) -> None:
        super().__init__(save_dir, name=name, version=version, prefix=prefix, flush_logs_every_n_steps=1)
        self.keep_rows = keep_rows
        self.writer: MetricsWriter | None = None

    @classmethod
    def continue_config(cls, node: Any, point: ResumePoint) -> None:
        # drop rows logged after the checkpoint (all of them when starting over without one)
        node.keep_rows = 0 if point.state is None else point.state.get("csv_rows")

    def checkpoint_state(self) -> dict[str, Any]:
        self.save()  # everything logged so far is on disk before the checkpoint claims it
        return {"csv_rows": self.rows}

    @property
    def experiment(self) -> MetricsWriter:
        if rank_zero_only.rank > 0:
            return super().experiment  # Lightning's stand-in, which writes nothing on ranks > 0
        if self.writer is None:
            self.writer = MetricsWriter(self.log_dir, self.keep_rows)
        return self.writer

    @property
    def rows(self) -> int:
        """Rows in metrics.csv once everything logged so far is written (rank 0 only)."""
        return self.experiment.rows
