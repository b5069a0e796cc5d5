"""CSV metrics that survive a crash and continue on resume: Lightning's CSVLogger, made safe.

Lightning's writer deletes an existing `metrics.csv` and rewrites the header non-atomically.
This one writes each row as it is logged, rewrites the file only through a temp file + rename,
and on resume keeps exactly the rows that the checkpoint it resumes from had seen (`keep_rows`),
so the resumed run appends without duplicated or missing epochs.
"""

import csv
import io
from pathlib import Path
from typing import Any

from lightning_utilities.core.rank_zero import rank_zero_only  # the one both Lightning packages set

from dlops.lightning import Adaptable
from dlops.rundir import atomic
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


class AppendingWriter(Adaptable):
    """Keeps an existing metrics.csv (cut back to `keep_rows` rows) and appends to it."""

    lightning_base = "loggers.csv_logs.ExperimentWriter"

    def __init__(self, log_dir: str, keep_rows: int | None = None) -> None:
        super().__init__(log_dir)
        path = Path(self.metrics_file_path)
        header, rows = read_rows(path)
        if keep_rows is not None and len(rows) > keep_rows:
            rows = rows[:keep_rows]
            write_rows(path, header, rows)
        self.metrics_keys = sorted(header)
        self.rows = len(rows)

    def _check_log_dir_exists(self) -> None:
        pass  # Lightning deletes metrics.csv here; a run dir is never shared, so keep it

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        path = Path(self.metrics_file_path)
        write_rows(path, fieldnames, read_rows(path)[1])

    def save(self) -> None:
        self.rows += len(self.metrics)
        super().save()


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

    @classmethod
    def continue_config(cls, node: Any, point: ResumePoint) -> None:
        # drop rows logged after the checkpoint (all of them when starting over without one)
        node.keep_rows = 0 if point.state is None else point.state.get("csv_rows")

    def checkpoint_state(self) -> dict[str, Any]:
        self.save()  # everything logged so far is on disk before the checkpoint claims it
        return {"csv_rows": self.rows}

    @property
    def experiment(self) -> AppendingWriter:
        if rank_zero_only.rank > 0:
            return super().experiment  # Lightning's stand-in, which writes nothing on ranks > 0
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(self.log_dir, self.keep_rows)
        return self._experiment

    @property
    def rows(self) -> int:
        """Rows in metrics.csv once everything logged so far is written (rank 0 only)."""
        return self.experiment.rows
