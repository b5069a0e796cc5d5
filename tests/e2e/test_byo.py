"""Bring your own model and data: plain Lightning classes and configs outside this repo, run
through `python train.py --config-dir`, get every dlops feature (run dir, best checkpoint by their
metric, sweeps, resume, report, DDP), and the bundled regression example."""

import csv
import json
import signal
import textwrap
from pathlib import Path

import httpx
import pytest
import torch
from helpers import Server, clean_env, error_of, finish, run_dirs, start, state_dict, summary, train, wait_for

from dlops.cli import main as dlops

# a plain LightningDataModule and LightningModule: scikit-learn's breast-cancer table and a
# logistic regression, importing nothing from dlops
CODE = '''
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class CancerData(pl.LightningDataModule):
    def __init__(self, batch_size=64):
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage=None):
        from sklearn.datasets import load_breast_cancer

        x, y = load_breast_cancer(return_X_y=True)
        x = torch.tensor(x, dtype=torch.float32)
        x = (x - x.mean(0)) / x.std(0)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        x, y = x[order], torch.tensor(y)[order]
        self.train_set = TensorDataset(x[:400], y[:400])
        self.val_set = TensorDataset(x[400:], y[400:])
        self.features = x.shape[1]

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)


class LogReg(pl.LightningModule):
    def __init__(self, features, lr=0.05):
        super().__init__()
        self.save_hyperparameters()
        self.linear = torch.nn.Linear(features, 1)

    def forward(self, x):
        return self.linear(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self(x), y.float())
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float())
        self.log("val_loss", loss, sync_dist=True)  # one value over DDP processes
        self.log("val_acc", ((logits > 0).long() == y).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
'''
CONFIGS = {
    "datamodule/cancer.yaml": "_target_: mine.CancerData\nbatch_size: 64\n",
    "model/logreg.yaml": "_target_: mine.LogReg\nfeatures: ${data:features}\nlr: 0.05\n",
    "experiment/cancer.yaml": textwrap.dedent("""\
        # @package _global_
        defaults:
          - override /datamodule: cancer
          - override /model: logreg
        monitor: val_acc
        mode: max
        """),
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project outside the repo: their package `mine` and their conf/ folder."""
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "mine.py").write_text(CODE)
    for name, text in CONFIGS.items():
        (tmp_path / "proj" / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "proj" / "conf" / name).write_text(text)
    (tmp_path / "work").mkdir()
    return tmp_path


def their_env(project: Path) -> dict[str, str]:
    env = clean_env()
    env["PYTHONPATH"] += f":{project / 'proj'}"
    return env


def run(project: Path, *overrides: str, check: bool = True):
    return train(project / "work", "--config-dir", str(project / "proj" / "conf"), *overrides,
                 env=their_env(project), check=check)


def column(run_dir: Path, name: str) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as file:
        return [float(row[name]) for row in csv.DictReader(file) if row.get(name)]


def test_own_classes_train_and_keep_the_best_checkpoint_by_their_metric(project):
    result = run(project, "datamodule=cancer", "model=logreg", "monitor=val_acc", "mode=max",
                 "trainer.max_epochs=4", "callbacks=[default,evaluation]", "logger=[csv,tensorboard]")
    output = result.stdout + result.stderr
    assert "LogReg has no test_step or CancerData no test_dataloader: not tested" in output
    [run_dir] = run_dirs(project / "work")
    info = summary(run_dir)
    assert info["status"] == "completed" and info["monitor"] == "val_acc"
    accuracy = column(run_dir, "val_acc")
    assert len(accuracy) == 4 and column(run_dir, "val_loss") and column(run_dir, "train_loss")
    assert info["best_metric"] == pytest.approx(max(accuracy))
    assert "val_acc=" in info["best_checkpoint"] and (run_dir / info["best_checkpoint"]).is_file()
    # their logits are enough for the evaluation callback: confusion matrix and ROC of 169 patients
    evaluation = json.loads((run_dir / "plots" / "evaluation.json").read_text())
    assert sum(map(sum, evaluation["confusion_matrix"])) == 169 and evaluation["auc"]["1"] > 0.9
    assert (run_dir / "plots" / "roc.png").is_file() and list((run_dir / "tensorboard").glob("events.*"))


@pytest.mark.slow
def test_a_monitor_they_never_log_stops_after_the_first_epoch_naming_what_they_log(project):
    result = run(project, "experiment=cancer", "monitor=val_nonexistent", "trainer.max_epochs=3",
                 check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert ("monitor=val_nonexistent is not logged by this model; it logged: "
            "train_loss, val_acc, val_loss") in output
    [run_dir] = run_dirs(project / "work")
    assert summary(run_dir)["status"] == "failed" and summary(run_dir)["epochs_completed"] == 0


@pytest.mark.slow
def test_their_class_rejecting_an_argument_is_one_message_naming_the_key(project):
    result = run(project, "experiment=cancer", "+model.dropout=0.5", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert "unexpected keyword argument 'dropout'" in output and "full_key: model" in output


@pytest.mark.slow
def test_their_sweep_is_ranked_by_their_metric_in_the_summary_and_the_report(project, capsys):
    run(project, "-m", "experiment=cancer", "model.lr=0.001,0.5", "trainer.max_epochs=3")
    [sweep] = (project / "work" / "multirun").glob("*/*")
    jobs = {d.name: summary(d) for d in run_dirs(project / "work", "multirun")}
    best = json.loads((sweep / "best.json").read_text())
    winner = max(jobs, key=lambda job: jobs[job]["best_metric"])
    assert best["best"] == pytest.approx(jobs[winner]["best_metric"]) and best["run_dir"].endswith(winner)
    assert best["monitor"] == "val_acc" and best["mode"] == "max"
    assert dlops(["report", str(sweep), "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [Path(row["run_dir"]).name for row in rows] == [winner, str(1 - int(winner))]  # max first
    assert dlops(["report", str(sweep), "--group-by", "model.lr", "--format", "csv"]) == 0
    groups = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(groups) == 2 and all("val_acc" in " ".join(group) for group in groups)
    # resuming the sweep finds their configs again without being told --config-dir
    result = train(project / "work", "-m", f"resume={sweep}", env=their_env(project))
    assert "0 already completed" in result.stdout + result.stderr


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_trains_their_model_exactly_as_without_a_stop(project):
    # batch 8: 50 steps an epoch, so the signal lands mid-epoch
    args = ["--config-dir", str(project / "proj" / "conf"), "experiment=cancer",
            "datamodule.batch_size=8", "trainer.max_epochs=3"]
    reference_dir = project / "reference"
    reference_dir.mkdir()
    train(reference_dir, *args, env=their_env(project))
    [reference] = run_dirs(reference_dir)

    process = start(project / "work", *args, env=their_env(project))
    run_dir = wait_for(project / "work", "outputs/*/*/summary.json",
                       lambda s: s["epochs_completed"] >= 1, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143, finish(process)[-3000:]
    stopped = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    run(project, f"resume={run_dir}")
    info = summary(run_dir)
    assert info["status"] == "completed" and info["epochs_completed"] == 3
    assert column(run_dir, "val_acc") == column(reference, "val_acc")  # each epoch once, same values
    mine, theirs = (state_dict(d / "checkpoints" / "last.ckpt") for d in (run_dir, reference))
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs), f"stopped at step {stopped}"


@pytest.mark.slow
def test_their_model_runs_under_ddp_and_debug_fast(project):
    run(project, "experiment=cancer", "trainer=ddp_cpu", "trainer.max_epochs=2")
    run(project, "experiment=cancer", "debug=fast")
    runs = run_dirs(project / "work")
    assert [summary(d)["status"] for d in runs] == ["completed", "completed"]
    assert len(list((project / "work" / "outputs").glob("*/*"))) == 2  # rank 1 made no dir
    # only rank 0 wrote: one log, one best checkpoint, each epoch's val and train row once
    ddp = runs[0]
    with open(ddp / "csv" / "metrics.csv") as file:
        rows = [tuple(row.items()) for row in csv.DictReader(file)]
    assert len(rows) == len(set(rows)) == 2 * 2
    assert sorted(p.name for p in ddp.glob("*.log")) == ["train.log"]
    assert len(list((ddp / "checkpoints").glob("epoch=*.ckpt"))) == 1
    assert len(column(runs[0], "val_acc")) == 2 and len(column(runs[1], "val_acc")) == 1


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory) -> Path:
    """The bundled regression example, run as README shows: `python train.py experiment=diabetes`."""
    cwd = tmp_path_factory.mktemp("diabetes")
    train(cwd, "experiment=diabetes")
    [run_dir] = run_dirs(cwd)
    return run_dir


@pytest.mark.slow
def test_regression_example_beats_predicting_the_training_mean_by_a_fifth(diabetes):
    run_dir = diabetes
    info = summary(run_dir)
    mae, baseline = column(run_dir, "val_mae"), column(run_dir, "val_baseline_mae")
    assert info["status"] == "completed" and info["best_metric"] == pytest.approx(min(mae))
    assert info["best_metric"] <= 0.8 * baseline[0]
    assert info["test_metrics"]["test_mae"] < 0.8 * info["test_metrics"]["test_baseline_mae"]


@pytest.mark.slow
def test_a_model_of_your_own_evaluates_exports_and_serves_and_says_what_it_cannot_do(diabetes, capsys):
    run_dir = diabetes
    assert dlops(["eval", str(run_dir)]) == 0  # in this process: the worker has torch loaded
    [eval_dir] = (run_dir / "eval").iterdir()
    metrics = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
    own = summary(run_dir)["test_metrics"]
    assert "test_mae" in own and all(abs(metrics[k] - v) <= 1e-6 for k, v in own.items())
    assert not (eval_dir / "confusion_matrix.csv").exists()  # a regressor: metrics only
    capsys.readouterr()
    assert dlops(["predict", str(run_dir)]) == 2
    message = error_of("predict", capsys.readouterr().err)
    assert message.startswith("dlops predict: error:") and "DiabetesData has no predict_dataloader" in message
    assert dlops(["export", str(run_dir)]) == 0
    info = json.loads((run_dir / "export" / "model.json").read_text())
    assert info["input"]["shape"] == ["batch", 10] and info["output"]["shape"] == ["batch"]
    assert info["output"]["meaning"] == "the model's forward output"
    assert info["verification"]["passed"] and "class_names" not in info
    assert info["verification"]["inputs"] == "the first inputs of the run's test split"
    # served: JSON rows in, one prediction a row out, as the restored model in torch gives them
    from dlops.inference.restore import restore

    restored = restore(run_dir)
    restored.datamodule.setup("test")
    features = next(iter(restored.datamodule.test_dataloader()))[0][:5]
    with torch.inference_mode():
        expected = restored.model(features).tolist()
    served = Server(run_dir)
    try:
        answer = httpx.post(f"{served.url}/predict", json={"inputs": features.tolist()})
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"] == pytest.approx(expected, abs=1e-3) and "labels" not in answer.json()
    finally:
        code, output = served.stop()
    assert code == 0 and "Traceback" not in output
