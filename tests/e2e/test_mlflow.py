"""`logger=mlflow` for real: the shared SQLite store read back with MlflowClient."""

import csv
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, fast, finish, mlflow_history, run_dirs, start, summary, train, wait_for
from mlflow import MlflowClient

MLFLOW = "logger=[csv,mlflow]"


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
def test_mlflow_run_holds_config_tags_artifacts_and_the_history_of_metrics_csv(tmp_path):
    train(tmp_path, MLFLOW, *fast(), "tags=[mnist]", "logger.mlflow.log_checkpoints=true")
    [run_dir] = run_dirs(tmp_path)
    info = summary(run_dir)
    store = info["mlflow"]
    assert store["tracking_uri"] == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert info["loggers"] == ["CSVLogger", "MLFlowLogger"]
    client = MlflowClient(store["tracking_uri"])
    run = client.get_run(store["run_id"])
    assert run.info.status == "FINISHED" and run.info.experiment_id == store["experiment_id"]
    params, tags = run.data.params, run.data.tags
    assert params["datamodule/batch_size"] == "256" and params["trainer/max_epochs"] == "2"
    assert params["parameters"] == str(info["parameters"])
    assert tags["dlops.run_dir"] == str(run_dir) and "mnist" in tags
    assert tags["dlops.overrides"] == " ".join(info["overrides"])
    assert tags.get("mlflow.source.git.commit") == code_commit()  # MLflow's: train.py's repository
    assert_same_history(client, store["run_id"], run_dir)
    # the config file as an artifact, and the best checkpoint (asked for)
    config = Path(client.download_artifacts(store["run_id"], "hydra/config.yaml", str(tmp_path)))
    assert config.read_text() == (run_dir / ".hydra" / "config.yaml").read_text()
    best = Path(info["best_checkpoint"]).stem
    assert [a.path for a in client.list_artifacts(store["run_id"], best)] == [
        f"{best}/aliases.txt", f"{best}/{best}.ckpt", f"{best}/metadata.yaml"]


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
