"""MLflow as its users run it: a team's tracking server or a shared store, else a local SQLite
store that every run started from one folder shares (no server, no network).

Lightning's MLFlowLogger, plus what dlops needs: the tracking URI chosen as MLflow users expect
(`logger.mlflow.tracking_uri`, else MLFLOW_TRACKING_URI, else the local store), the store and
experiment made once under a file lock (sweep jobs start together), a run name and tags with
values, tags that say where the run lives, the `.hydra/` config files as artifacts, figures, the
exported ONNX model (registered when asked), the run's outcome as its status, and a resume that
continues the same MLflow run without logging a step twice.
"""

import fcntl
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning_utilities.core.rank_zero import rank_zero_only  # the one both Lightning packages set

from dlops.errors import ConfigError
from dlops.tracking.tracker import ResumePoint, Tracker, sweep_dir

log = logging.getLogger(__name__)

SQLITE = "sqlite:///"
# a run's outcome (dlops status) -> MLflow run status
RUN_STATUS = {"completed": "FINISHED", "interrupted": "KILLED"}  # anything else: FAILED
# where the tracking URI came from, as summary.json records it
FROM_CONFIG, FROM_ENV, FROM_LOCAL = "logger.mlflow.tracking_uri", "MLFLOW_TRACKING_URI", "local store"


def choose_tracking_uri(tracking_uri: str | None, local_store: str) -> tuple[str, str]:
    """The store a run logs to, and why: `logger.mlflow.tracking_uri` when set, else the
    MLFLOW_TRACKING_URI environment variable, else `local_store`."""
    if tracking_uri:
        return tracking_uri, FROM_CONFIG
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], FROM_ENV
    return local_store, FROM_LOCAL


def check_server(tracking_uri: str, source: str, timeout: float = 3.0) -> None:
    """For an http(s) tracking server: raise ConfigError at once when nothing answers on its port
    (MLflow's client would retry for minutes)."""
    url = urlparse(tracking_uri)
    if url.scheme not in ("http", "https"):
        return
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    raise ConfigError(f"the MLflow tracking server {tracking_uri} (from {source}) cannot be reached: "
                      f"{reason}. Start it, or log elsewhere: unset MLFLOW_TRACKING_URI for the local "
                      "store, or set logger.mlflow.tracking_uri.")


def sweep_run_name(name: str | None) -> str | None:
    """The MLflow run name: the run's `name`, and in a sweep the job number after it (`006-2`),
    so a sweep's runs tell apart in the runs table."""
    from hydra.core.hydra_config import HydraConfig

    if name is None or sweep_dir() is None:
        return name
    return f"{name}-{HydraConfig.get().job.num}"


def tag_values(tags: list[str] | Mapping[str, Any] | None) -> dict[str, str]:
    """MLflow tags from dlops `tags`: `team:vision` (or `team=vision`) is tag `team` with value
    `vision`; a plain tag `mnist` is `mnist: true`; a mapping is used as it is."""
    if isinstance(tags, Mapping):
        return {str(k): str(v) for k, v in tags.items()}
    found = {}
    for tag in tags or []:
        key, sep, value = str(tag).replace("=", ":", 1).partition(":")
        found[key.strip()] = value.strip() if sep else "true"
    return found


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///PATH` tracking URI (None for any other store)."""
    return Path(tracking_uri[len(SQLITE):]) if tracking_uri.startswith(SQLITE) else None


@contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite store. Two sweep jobs that open a new store at once
    would both create its tables, and one would fail."""
    db = sqlite_file(tracking_uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_experiment(tracking_uri: str, name: str, artifact_location: str | None) -> str:
    """The id of experiment `name` in the store, made (with the store) if new."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    with store_lock(tracking_uri):
        try:
            client = MlflowClient(tracking_uri)
            found = client.get_experiment_by_name(name)
            if found is None:
                return client.create_experiment(name, artifact_location=artifact_location)
        except (MlflowException, SQLAlchemyError) as exc:  # e.g. a file that is not a database
            reason = str(getattr(exc, "message", exc)).splitlines()[0]
            raise ConfigError(f"cannot use the MLflow store {tracking_uri}: {reason}. Give another "
                              "logger.mlflow.tracking_uri.") from None
    if found.lifecycle_stage == "deleted":  # MLflow keeps the name taken until it is purged
        raise ConfigError(f"the MLflow experiment '{name}' in {tracking_uri} was deleted; restore it "
                          f"(mlflow experiments restore --experiment-id {found.experiment_id}) or "
                          "choose another logger.mlflow.experiment_name.")
    return found.experiment_id


def flat_params(params: Any, prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameters as MLflow params named `model/optimizer/lr`, the names Lightning's
    MLFlowLogger gives them (a resumed run compares its params with those by name)."""
    if not isinstance(params, Mapping):
        params = vars(params) if hasattr(params, "__dict__") else {"value": params}  # a Namespace
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):  # an empty one leaves no param, as in Lightning
            flat.update(flat_params(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


class MLFlowLogger(Tracker):
    """One MLflow run per dlops run, in experiment `experiment_name` of the store at `tracking_uri`.

    `artifact_location`: where new experiments keep artifacts; None = `artifacts/` beside a
    SQLite database. `log_checkpoints`: upload the best checkpoint(s) at the end. `run_id`: an
    existing run to continue (set by resume=).
    """

    lightning_base = "loggers.MLFlowLogger"

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = "dlops",
                 run_name: str | None = None, tags: list[str] | Mapping[str, Any] | None = None,
                 artifact_location: str | None = None, log_checkpoints: bool = False,
                 run_id: str | None = None, local_store: str = "sqlite:///mlflow/mlflow.db",
                 register_as: str | None = None) -> None:
        tracking_uri, self.source = choose_tracking_uri(tracking_uri, local_store)
        db = sqlite_file(tracking_uri)
        if artifact_location is None and db is not None:
            artifact_location = str(db.resolve().parent / "artifacts")
        if rank_zero_only.rank == 0:
            check_server(tracking_uri, self.source)
            open_experiment(tracking_uri, experiment_name, artifact_location)
        super().__init__(experiment_name=experiment_name, run_name=sweep_run_name(run_name),
                         tracking_uri=tracking_uri, tags=tag_values(tags), log_model=log_checkpoints,
                         artifact_location=artifact_location, run_id=run_id)
        self.register_as = register_as
        self.tracking_uri = tracking_uri  # the store this run logs to (where each reader looks)
        self.started = False  # whether the MLflow run was opened (by `start` or by logging)
        self.resumed = run_id is not None
        self._earlier: tuple[set[tuple[str, int]], set[str]] | None = None

    @classmethod
    def continue_config(cls, node: Any, point: ResumePoint) -> None:
        entry = point.summary.get("mlflow") or {}
        if entry.get("run_id") and not point.copied_from:
            node.run_id = entry["run_id"]  # the same MLflow run, in the same store
            node.tracking_uri = entry.get("tracking_uri") or node.get("tracking_uri")

    @classmethod
    def log_export(cls, node: Any, summary: dict[str, Any], export_dir: Path) -> str | None:
        entry = summary.get("mlflow") or {}
        if not entry.get("run_id") or not (export_dir / "model.onnx").is_file():
            return None
        from dlops.tracking.mlflow_model import log_onnx_model

        return log_onnx_model(entry, export_dir / "model.onnx", node.get("register_as"))

    def earlier(self) -> tuple[set[tuple[str, int]], set[str]]:
        """What earlier attempts of a resumed run logged: (metric, step) pairs and param keys."""
        if self._earlier is None:
            client, run_id = self.experiment, self.run_id
            run = client.get_run(run_id)
            steps = {(m.key, m.step) for key in run.data.metrics
                     for m in client.get_metric_history(run_id, key)}
            self._earlier = steps, set(run.data.params)
        return self._earlier

    @rank_zero_only
    def start(self, summary: dict[str, Any]) -> None:
        client, run_id = self.experiment, self.run_id
        self.started = True
        if self.resumed:
            client.update_run(run_id, status="RUNNING")
        tags = {"dlops.run_dir": summary["run_dir"], "dlops.overrides": " ".join(summary["overrides"]),
                "dlops.attempts": str(len(summary.get("attempts") or [summary]))}
        git = summary.get("git")  # of the working dir; MLflow tags train.py's as mlflow.source.git.commit
        if git:
            tags["dlops.git_commit"] = git["commit"] + ("-dirty" if git["dirty"] else "")
        if sweep_dir():
            tags["dlops.sweep"] = str(Path(sweep_dir()).resolve())  # a sweep's jobs share it
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        config_dir = Path(summary["run_dir"]) / ".hydra"
        if config_dir.is_dir():
            client.log_artifacts(run_id, str(config_dir), "hydra")
        source = self.source
        if self.resumed and (summary.get("mlflow") or {}).get("tracking_uri") == self.tracking_uri:
            source = summary["mlflow"].get("tracking_uri_from", source)  # chosen by the first attempt
        summary["mlflow"] = {"tracking_uri": self.tracking_uri, "tracking_uri_from": source,
                             "run_id": run_id, "experiment_id": self.experiment_id}
        log.info("MLflow logs to %s (from %s), run %s", self.tracking_uri, source, run_id)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        self.started = True
        params = flat_params(params)
        if self.resumed:  # MLflow refuses to change a param: a resumed run keeps its first values
            params = {k: v for k, v in params.items() if k not in self.earlier()[1]}
        super().log_hyperparams(params)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        # MLflow cannot delete a point: the steps an earlier attempt logged after its last
        # checkpoint are kept, and the resumed attempt does not log them a second time
        self.started = True
        if self.resumed:
            metrics = {k: v for k, v in metrics.items() if (k, step or 0) not in self.earlier()[0]}
        if metrics:
            super().log_metrics(metrics, step)

    @rank_zero_only
    def log_figures(self, figures: dict[str, Any], result: dict[str, Any], tag: str, step: int) -> None:
        for name, figure in figures.items():
            self.experiment.log_figure(self.run_id, figure, f"plots/{tag}/{name}.png")

    def finalize(self, status: str = "success") -> None:
        pass  # Lightning calls this after fit and again after test; `finish` ends the run once

    @rank_zero_only
    def finish(self, status: str, best: float | None) -> None:
        if self.started:  # Lightning's own end of the run: log_checkpoints uploads, then the status
            super().finalize(RUN_STATUS.get(status, "FAILED"))
