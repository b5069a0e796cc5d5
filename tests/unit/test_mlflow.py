"""`logger=mlflow` for real: the shared SQLite store read back with MlflowClient."""

import socket
import time

import pytest
from helpers import mlflow_history
from mlflow import MlflowClient

from dlops.errors import ConfigError
from dlops.tracking.mlflow_logger import MLFlowLogger, choose_tracking_uri, tag_values


def test_resumed_logger_logs_no_step_twice_and_keeps_its_params(store, tmp_path):
    uri = store
    first = MLFlowLogger(uri, experiment_name="e")
    first.log_hyperparams({"trainer": {"max_epochs": 2}, "resume": None})
    for step in range(4):
        first.log_metrics({"val_loss": 1.0 / (step + 1)}, step=step)
    first.finish("interrupted", None)
    client = MlflowClient(uri)
    assert client.get_run(first.run_id).info.status == "KILLED"

    again = MLFlowLogger(uri, experiment_name="e", run_id=first.run_id)
    again.start({"run_dir": str(tmp_path), "overrides": ["resume=x"], "attempts": [{}, {}]})
    assert client.get_run(first.run_id).info.status == "RUNNING"
    again.log_hyperparams({"trainer": {"max_epochs": 5}, "resume": "x"})  # MLflow refuses changes
    for step in range(2, 6):  # steps 2 and 3 were logged by the first attempt, after its checkpoint
        again.log_metrics({"val_loss": 10.0 + step}, step=step)
    again.finish("completed", None)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.params["trainer/max_epochs"] == "2"
    assert mlflow_history(client, first.run_id)["val_loss"] == [
        (0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3)), (3, 0.25), (4, 14.0), (5, 15.0)]
    assert run.data.tags["dlops.attempts"] == "2"


def test_deleted_experiment_or_a_store_that_is_not_one_gets_one_message(store, tmp_path):
    uri = store
    client = MlflowClient(uri)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(ConfigError, match="experiment 'gone' in .* was deleted; restore it"):
        MLFlowLogger(uri, experiment_name="gone")
    (tmp_path / "notes.db").write_text("not a database")
    with pytest.raises(ConfigError, match="cannot use the MLflow store .*notes.db"):
        MLFlowLogger(f"sqlite:///{tmp_path}/notes.db")
    assert (tmp_path / "notes.db").read_text() == "not a database"  # left as it was


def test_the_tracking_uri_comes_from_the_config_then_mlflow_tracking_uri_then_the_local_store(
        store, tmp_path, monkeypatch):
    local = f"sqlite:///{tmp_path}/local/mlflow.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert choose_tracking_uri(None, local) == (local, "local store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert choose_tracking_uri(None, local) == (store, "MLFLOW_TRACKING_URI")
    assert choose_tracking_uri("http://mlflow.example:5000", local) == (
        "http://mlflow.example:5000", "logger.mlflow.tracking_uri")
    logger = MLFlowLogger(None, experiment_name="from-env", local_store=local)
    summary = {"run_dir": str(tmp_path), "overrides": []}
    logger.start(summary)
    assert (summary["mlflow"]["tracking_uri"], summary["mlflow"]["tracking_uri_from"]) == (
        store, "MLFLOW_TRACKING_URI")
    assert MlflowClient(store).get_run(summary["mlflow"]["run_id"]).info.status == "RUNNING"
    logger.finish("completed", None)
    assert not (tmp_path / "local").exists()  # the local store was not made


def test_an_unreachable_tracking_server_stops_the_run_at_once_with_one_message(monkeypatch, tmp_path):
    with socket.socket() as probe:  # a loopback port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"the MLflow tracking server http://127.0.0.1:{port} \(from "
                       r"MLFLOW_TRACKING_URI\) cannot be reached: .*unset MLFLOW_TRACKING_URI"):
        MLFlowLogger(None, local_store=f"sqlite:///{tmp_path}/mlflow.db")
    assert time.monotonic() - started < 10  # not MLflow's minutes of retries


def test_dlops_tags_become_mlflow_tags_with_values():
    assert tag_values(["mnist", "team:vision", "owner=ana", " spaced : out "]) == {
        "mnist": "true", "team": "vision", "owner": "ana", "spaced": "out"}
    assert tag_values({"team": "vision", "n": 3}) == {"team": "vision", "n": "3"}
    assert tag_values(None) == {}
