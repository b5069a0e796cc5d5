"""`logger=mlflow` for real: a real `mlflow server` on loopback (as a team runs one) and the shared
local SQLite store, read back with MlflowClient; the ONNX model logged, registered, loaded with
`mlflow.pyfunc` and predicting."""

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    ROOT,
    STEPS_PER_EPOCH,
    clean_env,
    fast,
    finish,
    mlflow_history,
    run_dirs,
    start,
    summary,
    train,
    wait_for,
)
from mlflow import MlflowClient

from dlops.cli import main as dlops

MLFLOW = "logger=[csv,mlflow]"


class Server:
    """`mlflow server` on 127.0.0.1 with a temp SQLite store and proxied artifacts, started when
    the module starts (it takes tens of seconds on a busy 2-core machine: the tests before the one
    that needs it run meanwhile)."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "server.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{root}/server.db",
             "--artifacts-destination", str(root / "artifacts")],
            env=clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)

    def ready(self, timeout: float = 240) -> str:
        """The server's URL once it answers /health."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (Path(self.log.name).read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self.url
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server did not answer in {timeout}s: "
                             f"{Path(self.log.name).read_text()[-3000:]}")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module", autouse=True)
def server(tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("mlflow-server"))
    yield running
    running.stop()


def check_logged_model(model_uri: str, tracking_uri: str, run_dir: Path) -> None:
    """The logged model is the run's ONNX export, with its signature, and predicts as it does."""
    import mlflow
    import onnxruntime

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    assert "onnx" in model.metadata.flavors
    [spec] = model.metadata.signature.inputs.inputs
    assert (spec.name, str(spec.type), spec.shape) == ("pixels", "float32", (-1, 1, 28, 28))
    [out] = model.metadata.signature.outputs.inputs
    assert (out.name, out.shape) == ("probabilities", (-1, 2))
    pixels = np.random.default_rng(0).uniform(0, 255, (5, 1, 28, 28)).astype(np.float32)
    predicted = model.predict(pixels)["probabilities"]
    session = onnxruntime.InferenceSession(str(run_dir / "export" / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert predicted.shape == (5, 2)
    np.testing.assert_allclose(predicted, session.run(None, {"pixels": pixels})[0], atol=1e-6)


def code_commit() -> str | None:
    """The commit of this checkout (None outside git)."""
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def csv_history(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric of csv/metrics.csv as (step, value) points, sorted."""
    history: dict[str, list[tuple[int, float]]] = {}
    with open(run_dir / "csv" / "metrics.csv") as file:
        for row in csv.DictReader(file):
            for key, value in row.items():
                if key != "step" and value:
                    history.setdefault(key, []).append((int(row["step"]), float(value)))
    return {key: sorted(points) for key, points in history.items()}


def assert_same_history(client: MlflowClient, run_id: str, run_dir: Path) -> None:
    expected, logged = csv_history(run_dir), mlflow_history(client, run_id)
    assert sorted(logged) == sorted(expected)
    for key, points in expected.items():
        assert [s for s, _ in logged[key]] == [s for s, _ in points], key
        assert [v for _, v in logged[key]] == pytest.approx([v for _, v in points]), key


@pytest.mark.slow
def test_without_a_tracking_uri_the_run_goes_to_the_local_store_and_dlops_export_logs_the_model(
        tmp_path, capsys):
    train(tmp_path, MLFLOW, *fast(), "name=x", "tags=[mnist,team:vision]",
          "logger.mlflow.log_checkpoints=true")
    [run_dir] = run_dirs(tmp_path)
    info = summary(run_dir)
    store = info["mlflow"]
    assert store["tracking_uri"] == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert store["tracking_uri_from"] == "local store"
    assert info["loggers"] == ["CSVLogger", "MLFlowLogger"]
    client = MlflowClient(store["tracking_uri"])
    run = client.get_run(store["run_id"])
    assert run.info.status == "FINISHED" and run.info.experiment_id == store["experiment_id"]
    assert run.info.run_name == "x"
    params, tags = run.data.params, run.data.tags
    assert params["datamodule/batch_size"] == "256" and params["trainer/max_epochs"] == "2"
    assert params["parameters"] == str(info["parameters"])
    assert (tags["mnist"], tags["team"]) == ("true", "vision")  # tags with values
    assert tags["dlops.run_dir"] == str(run_dir)
    assert tags["dlops.overrides"] == " ".join(info["overrides"])
    assert tags.get("mlflow.source.git.commit") == code_commit()  # MLflow's: train.py's repository
    assert_same_history(client, store["run_id"], run_dir)
    # the config file as an artifact, and the best checkpoint (asked for)
    config = Path(client.download_artifacts(store["run_id"], "hydra/config.yaml", str(tmp_path)))
    assert config.read_text() == (run_dir / ".hydra" / "config.yaml").read_text()
    best = Path(info["best_checkpoint"]).stem
    assert [a.path for a in client.list_artifacts(store["run_id"], best)] == [
        f"{best}/aliases.txt", f"{best}/{best}.ckpt", f"{best}/metadata.yaml"]

    # exported later: the model goes to the same run; summary.json, a training file, is not changed
    before = (run_dir / "summary.json").read_bytes()
    assert dlops(["export", str(run_dir)]) == 0
    said = capsys.readouterr().out.splitlines()[-1]
    where = f"MLflow run {store['run_id']} in {store['tracking_uri']}"
    assert said.startswith(f"logged the ONNX model to {where}: ")
    model_uri = said.rsplit(": ", 1)[1]
    [logged] = client.search_logged_models(experiment_ids=[store["experiment_id"]])
    assert (logged.source_run_id, f"models:/{logged.model_id}") == (store["run_id"], model_uri)
    check_logged_model(model_uri, store["tracking_uri"], run_dir)
    assert (run_dir / "summary.json").read_bytes() == before


@pytest.mark.slow
def test_interrupted_run_is_killed_and_resume_continues_it_without_duplicate_steps(tmp_path):
    process = start(tmp_path, MLFLOW, *fast(3))
    run_dir = wait_for(tmp_path, "outputs/*/*/summary.json", lambda s: s["epochs_completed"] >= 1, process)
    process.send_signal(signal.SIGTERM)
    output = finish(process)
    assert process.returncode == 143, output[-3000:]
    store = summary(run_dir)["mlflow"]
    client = MlflowClient(store["tracking_uri"])
    assert client.get_run(store["run_id"]).info.status == "KILLED"

    train(tmp_path, f"resume={run_dir}")
    info = summary(run_dir)
    assert info["status"] == "completed" and info["mlflow"] == store  # the same MLflow run
    assert len(client.search_runs([store["experiment_id"]])) == 1
    run = client.get_run(store["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["dlops.attempts"] == "2"
    for key in ("val_loss", "train_loss", "test_loss"):
        steps = [m.step for m in client.get_metric_history(store["run_id"], key)]
        assert len(steps) == len(set(steps)), key
    assert len(client.get_metric_history(store["run_id"], "val_loss")) == 3
    assert_same_history(client, store["run_id"], run_dir)


@pytest.mark.slow
def test_two_worker_joblib_sweep_gives_two_runs_and_a_failed_job_a_failed_run(tmp_path):
    result = train(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", MLFLOW,
                   "callbacks=[default,evaluation]", "callbacks.evaluation.labels=null,[a,b,c]",
                   *fast(1), check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "database is locked" not in output  # job 1 fails, as asked
    jobs = run_dirs(tmp_path, "multirun")
    infos = [summary(job) for job in jobs]
    assert [i["status"] for i in infos] == ["completed", "failed"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    runs = client.search_runs([infos[0]["mlflow"]["experiment_id"]])
    by_id = {r.info.run_id: r for r in runs}
    assert len(runs) == 2 and set(by_id) == {i["mlflow"]["run_id"] for i in infos}
    statuses = [by_id[i["mlflow"]["run_id"]].info.status for i in infos]
    assert statuses == ["FINISHED", "FAILED"]
    # named by the run's name and the job number: a sweep's runs tell apart in MLflow's table
    assert [by_id[i["mlflow"]["run_id"]].info.run_name for i in infos] == ["train-0", "train-1"]
    assert len({r.data.tags["dlops.sweep"] for r in runs}) == 1  # the sweep's jobs share a tag
    done = infos[0]["mlflow"]["run_id"]
    assert {a.path for a in client.list_artifacts(done)} == {"hydra", "plots"}  # no checkpoints
    assert "plots/val_best/confusion_matrix.png" in {
        a.path for a in client.list_artifacts(done, "plots/val_best")}


@pytest.mark.slow
def test_store_that_is_not_a_database_stops_the_run_with_one_message(tmp_path):
    (tmp_path / "notes.db").write_text("not a database")
    result = train(tmp_path, "logger=mlflow", f"logger.mlflow.tracking_uri=sqlite:///{tmp_path}/notes.db",
                   *fast(), check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert f"cannot use the MLflow store sqlite:///{tmp_path}/notes.db" in output
    assert "Give another logger.mlflow.tracking_uri" in output
    assert summary(run_dirs(tmp_path)[0])["status"] == "failed"
    assert (tmp_path / "notes.db").read_text() == "not a database"


@pytest.mark.slow
def test_resuming_a_copied_run_starts_new_tracker_runs_and_leaves_the_originals_alone(tmp_path):
    """A copy is a run of its own: the lock's message suggests copying a run to resume it."""
    train(tmp_path, "logger=[csv,mlflow,wandb]", *fast(1), "test=false")
    [original] = run_dirs(tmp_path)
    first = summary(original)
    client = MlflowClient(first["mlflow"]["tracking_uri"])
    history = mlflow_history(client, first["mlflow"]["run_id"])
    copy = tmp_path / "copies" / "run"
    shutil.copytree(original, copy, ignore=shutil.ignore_patterns(".dlops.lock"))
    result = train(tmp_path, f"resume={copy}", "trainer.max_epochs=2")
    output = result.stdout + result.stderr
    assert output.count(f"{copy} was started as {original}") == 1  # said once
    info = summary(copy)
    assert info["status"] == "completed" and info["epochs_completed"] == 2
    assert info["run_dir"] == str(copy) and info["attempts"][-1]["copied_from"] == str(original)
    assert info["mlflow"]["run_id"] != first["mlflow"]["run_id"]
    assert info["wandb"]["id"] != first["wandb"]["id"]
    assert summary(original) == first
    old = client.get_run(first["mlflow"]["run_id"])
    assert old.info.status == "FINISHED" and mlflow_history(client, old.info.run_id) == history
    new = client.get_run(info["mlflow"]["run_id"])
    assert new.info.status == "FINISHED" and new.data.tags["dlops.run_dir"] == str(copy)
    assert len(client.get_metric_history(new.info.run_id, "val_loss")) == 1  # the epoch trained now
    assert len(list((copy / "wandb").glob(f"offline-run-*-{info['wandb']['id']}"))) == 1


@pytest.mark.slow  # last in the module: the server has been starting while the tests above ran
def test_a_tracking_server_from_mlflow_tracking_uri_gets_the_run_and_the_registered_onnx_model(
        tmp_path, server):
    url = server.ready()
    train(tmp_path, MLFLOW, *fast(), "name=x", "export=onnx", "logger.mlflow.register_as=digits",
          "tags=[mnist,team:vision]", env=clean_env(MLFLOW_TRACKING_URI=url))
    [run_dir] = run_dirs(tmp_path)
    entry = summary(run_dir)["mlflow"]
    assert (entry["tracking_uri"], entry["tracking_uri_from"]) == (url, "MLFLOW_TRACKING_URI")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]  # no local store
    client = MlflowClient(url)
    run = client.get_run(entry["run_id"])
    assert (run.info.run_name, run.info.status) == ("x", "FINISHED")
    assert run.data.params["trainer/max_epochs"] == "2"
    assert (run.data.tags["mnist"], run.data.tags["team"]) == ("true", "vision")
    assert_same_history(client, entry["run_id"], run_dir)  # every epoch's metrics, as in metrics.csv
    assert [m.step for m in client.get_metric_history(entry["run_id"], "val_loss")] == [
        STEPS_PER_EPOCH * (epoch + 1) - 1 for epoch in range(2)]
    # registered: version 1 of `digits`, from this run; both URIs load the same ONNX model
    assert entry["registered_model"] == {"name": "digits", "version": "1"}
    version = client.get_model_version("digits", "1")
    assert version.run_id == entry["run_id"]
    check_logged_model(entry["model_uri"], url, run_dir)
    check_logged_model("models:/digits/1", url, run_dir)
