"""Trackers for real: TensorBoard events, offline W&B run files, evaluation plots, secrets."""

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import clean_env, fast, run_dirs, summary, train
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchmetrics.functional import auroc
from wandb_records import offline_runs, run_contents

from dlops.cli import main as dlops
from dlops.data.mnist import MNISTDataModule
from dlops.models.classifier import Classifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> tuple[dict[str, Path], subprocess.CompletedProcess, float]:
    """The reference project's experiments 002 (TensorBoard), 004 (W&B) and 006 (evaluation, best
    checkpoint) as one sweep, one process: their run dirs by name, its output and its seconds."""
    cwd = tmp_path_factory.mktemp("experiments")
    started = time.monotonic()
    # WANDB_PROJECT is set, but the experiments name their project: the config wins
    result = train(cwd, "-m", "experiment=002,004,006", *fast(3), env=clean_env(WANDB_PROJECT="from-env"))
    seconds = time.monotonic() - started
    return {summary(d)["name"]: d for d in run_dirs(cwd, "multirun")}, result, seconds


def test_tensorboard_has_val_loss_for_every_epoch(experiments):
    run_dir = experiments[0]["002"]
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert len(events.Scalars("val_loss")) == 3
    assert len(events.Scalars("train_loss")) == 3
    # the config in the HPARAMS tab, with the best val_loss as hp_metric
    hparams = b"".join(events.PluginTagToContent("hparams").values())
    assert b"model/net/hidden_sizes" in hparams and b"datamodule/batch_size" in hparams
    [hp_metric] = events.Scalars("hp_metric")  # once, no -1 placeholder before it
    assert hp_metric.value == pytest.approx(summary(run_dir)["best_metric"])
    assert [e.value for e in events.Scalars("epoch")] == [0, 1, 2]  # once per epoch
    assert summary(run_dir)["loggers"] == ["CSVLogger", "TensorBoardLogger"]


def test_wandb_offline_without_key_or_network(experiments):
    runs, result, seconds = experiments
    assert seconds < 120  # no waiting on a network (the three runs together)
    assert "wandb sync" in result.stdout + result.stderr  # says how to upload later
    run_dir = runs["004"]
    [run_file] = offline_runs(run_dir)
    run = run_contents(run_file)
    info = summary(run_dir)
    assert run["id"] == info["wandb"]["id"] and info["wandb"]["offline"] is True
    assert (run["project"], run["name"], run["exit_code"]) == ("dlops-mnist", "004", 0)
    assert run["summary"]["val_loss"] == pytest.approx(  # the best (by mode) and the last
        {"min": info["best_metric"], "last": info["last_metrics"]["val_loss"]})
    assert run["config"]["datamodule"]["batch_size"] == 256  # the resolved config
    assert run["config"]["model"]["net"]["hidden_sizes"] == [100]
    assert run["config"]["parameters"] == info["parameters"]


def test_wandb_online_without_key_fails_early(tmp_path):
    result = train(tmp_path, "logger=wandb", "logger.wandb.offline=false", *fast(), check=False)
    assert result.returncode != 0
    assert "W&B online needs an API key" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_each_sweep_job_is_its_own_wandb_run(experiments):
    jobs = [experiments[0][name] for name in ("004", "006")]  # the sweep's two W&B jobs
    runs = [run_contents(f) for job in jobs for f in offline_runs(job)]
    assert len(runs) == 2 and [r["id"] for r in runs] == [summary(job)["wandb"]["id"] for job in jobs]
    assert len({r["id"] for r in runs}) == 2 and {r["exit_code"] for r in runs} == {0}
    assert len({r["group"] for r in runs}) == 1 and runs[0]["group"].startswith("multirun")
    assert [r["config"]["name"] for r in runs] == ["004", "006"]


def test_failed_job_is_a_failed_wandb_run(tmp_path):
    result = train(tmp_path, "experiment=005", "callbacks.evaluation.labels=[a,b,c]", *fast(), check=False)
    assert result.returncode != 0 and "labels has 3 names for 2 classes" in result.stdout + result.stderr
    [run_dir] = run_dirs(tmp_path)
    assert summary(run_dir)["status"] == "failed"
    assert run_contents(offline_runs(run_dir)[0])["exit_code"] == 1


def test_experiment_006_best_checkpoint_and_roc(experiments):
    run_dir = experiments[0]["006"]
    best = [p.name for p in (run_dir / "checkpoints").glob("006-*.ckpt")]
    assert len(best) == 1 and re.fullmatch(r"006-val_loss=\d\.\d{5}-epoch=\d+\.ckpt", best[0])
    plots = run_dir / "plots"
    for name in ("confusion_matrix.png", "confusion_matrix.csv", "roc.png", "roc.csv", "evaluation.json"):
        assert (plots / name).stat().st_size > 0 and (plots / "final" / name).is_file()
    result = json.loads((plots / "evaluation.json").read_text())
    roc = result["roc"]["3"]
    assert len(roc["fpr"]) > 3  # from probabilities, not from hard 0/1 predictions
    assert result["labels"] == ["no 3", "3"] and sum(map(sum, result["confusion_matrix"])) == 638

    model = Classifier.load_from_checkpoint(run_dir / "checkpoints" / best[0], weights_only=True).eval()
    data = MNISTDataModule()
    data.setup()
    val = data.splits["val"]
    with torch.no_grad():
        probs = model.probabilities(model(val.images))
    assert result["auc"]["3"] == pytest.approx(auroc(probs, val.labels, task="binary").item(), abs=1e-6)


def test_ten_digit_evaluation_is_one_vs_rest(tmp_path):
    train(tmp_path, "datamodule.positive_digit=null", "callbacks=[default,evaluation]",
          *fast(1))
    result = json.loads((run_dirs(tmp_path)[0] / "plots" / "evaluation.json").read_text())
    assert result["labels"] == [str(d) for d in range(10)] and len(result["roc"]) == 10
    assert all(0.5 < auc <= 1 for auc in result["auc"].values())


def test_api_key_never_lands_in_the_run_dir(tmp_path):
    marker = "dlops-secret-marker-0123456789abcdef0123"
    train(tmp_path, "logger=many", "callbacks=[default,evaluation]", *fast(1),
          env=clean_env(WANDB_API_KEY=marker))
    [run_dir] = run_dirs(tmp_path)
    assert summary(run_dir)["wandb"]["offline"] is True  # key but no network: offline
    # nothing written outside the run dir but the shared MLflow store, which is searched too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow", "outputs"]
    files = [p for p in [*run_dir.rglob("*"), *(tmp_path / "mlflow").rglob("*")] if p.is_file()]
    assert len(files) > 20 and tmp_path / "mlflow" / "mlflow.db" in files
    for path in files:
        assert marker.encode() not in path.read_bytes(), f"API key found in {path}"


def test_dlops_plot_draws_learning_curves_of_a_sweep(tmp_path, experiments):
    sweep = Path(shutil.copytree(experiments[0]["002"].parent, tmp_path / "sweep"))
    for job in ("0", "1", "2"):
        (sweep / job / "plots" / "learning_curves.png").unlink()
    assert dlops(["plot", str(sweep)]) == 0
    for job in ("0", "1", "2"):
        assert (sweep / job / "plots" / "learning_curves.png").stat().st_size > 10_000
    assert dlops(["plot", str(sweep), "--out", str(tmp_path / "one.png")]) == 2  # three runs, one file
    assert dlops(["plot", str(sweep / "1"), "--out", str(tmp_path / "one.png")]) == 0
    assert (tmp_path / "one.png").stat().st_size > 10_000
    assert dlops(["plot", str(tmp_path / "sweep" / "0" / "csv")]) == 2  # no run: a message, not a traceback


def test_sweep_summary_keeps_each_job_on_one_line_in_a_log(experiments):
    output = experiments[1].stdout  # a pipe, as in CI logs: no terminal
    rows = [line for line in output.splitlines() if line.startswith("│")]  # the table's rows
    assert len(rows) == 3, output[-3000:]
    for job, row in enumerate(rows):
        assert re.match(rf"│ {job} +│ completed +│ experiment=00{2 * job + 2} +│ \d\.\d{{4}} ", row), row
