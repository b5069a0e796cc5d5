"""`logger=mlflow` for real: the shared SQLite store read back with MlflowClient."""


import pytest
from helpers import mlflow_history
from mlflow import MlflowClient

from dlops.errors import ConfigError
from dlops.tracking.mlflow_logger import MLFlowLogger


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
