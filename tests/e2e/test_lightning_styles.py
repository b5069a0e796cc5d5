"""Lightning code as people write it today, run through dlops from a folder outside this repo:

- `import lightning as L` (Lightning's own docs since 2.0): dict batches, metric names with slashes
  (`val/acc`), `example_input_array`; through train, sweep, exact resume after SIGTERM, DDP, eval,
  export and serving;
- a module written like lightning-hydra-template's, in `pytorch_lightning`, whose
  `save_hyperparameters()` holds its net and the optimizer's partials: test after fit, resume, eval.
"""

import csv
import json
import signal
import textwrap
from pathlib import Path

import httpx
import pytest
import torch
from helpers import Server, clean_env, finish, run_dirs, start, state_dict, summary, train, wait_for

from dlops.cli import main as dlops

BLOBS = BLOBS = '''
"""A user's code in Lightning's own style since 2.0: `import lightning as L`, dict batches,
metric names with slashes, and nothing from dlops."""
import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Points(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class Blobs(L.LightningDataModule):
    """Three Gaussian blobs in 8 dimensions: 600 points to train on, 200 to validate, 200 to test."""

    def __init__(self, batch_size: int = 32, noise: float = 1.5):
        super().__init__()
        self.batch_size, self.noise = batch_size, noise
        self.num_features, self.num_classes = 8, 3

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        centres = torch.randn(3, 8, generator=g) * 2
        y = torch.randint(0, 3, (1000,), generator=g)
        x = centres[y] + self.noise * torch.randn(1000, 8, generator=g)
        self.sets = {"train": Points(x[:600], y[:600]), "val": Points(x[600:800], y[600:800]),
                     "test": Points(x[800:], y[800:])}

    def train_dataloader(self):
        return DataLoader(self.sets["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.sets["val"], batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.sets["test"], batch_size=self.batch_size)


class SmallNet(L.LightningModule):
    def __init__(self, num_features: int, num_classes: int, hidden: int = 16, lr: float = 0.05,
                 sync_dist: bool = True):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        self.example_input_array = torch.zeros(1, num_features)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = nn.functional.cross_entropy(self(batch["x"]), batch["y"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, sync_dist=self.hparams.sync_dist)
        return loss

    def _evaluate(self, batch, stage):
        logits, sync = self(batch["x"]), self.hparams.sync_dist
        self.log(f"{stage}/loss", nn.functional.cross_entropy(logits, batch["y"]), sync_dist=sync)
        self.log(f"{stage}/acc", (logits.argmax(-1) == batch["y"]).float().mean(), sync_dist=sync)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
'''

TEMPLATE = '''
"""A module written like lightning-hydra-template's MNISTLitModule, in `pytorch_lightning`:
`save_hyperparameters()` stores the net (an nn.Module) and the optimizer and scheduler
(functools.partial objects) themselves."""
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification.accuracy import Accuracy


class SimpleDenseNet(nn.Module):
    def __init__(self, input_size: int = 8, lin1_size: int = 32, output_size: int = 3):
        super().__init__()
        self.model = nn.Sequential(nn.Linear(input_size, lin1_size), nn.BatchNorm1d(lin1_size), nn.ReLU(),
                                   nn.Linear(lin1_size, output_size))

    def forward(self, x):
        return self.model(x)


class BlobsData(pl.LightningDataModule):
    def __init__(self, batch_size: int = 64):
        super().__init__()
        self.save_hyperparameters(logger=False)

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(1)
        centres = torch.randn(3, 8, generator=g) * 2
        y = torch.randint(0, 3, (900,), generator=g)
        x = centres[y] + 3.0 * torch.randn(900, 8, generator=g)
        self.train_set, self.val_set, self.test_set = (TensorDataset(x[a:b], y[a:b])
                                                       for a, b in ((0, 600), (600, 750), (750, 900)))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

    def test_dataloader(self):
        return DataLoader(self.test_set, batch_size=self.hparams.batch_size)


class TemplateModule(pl.LightningModule):
    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, compile: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.net = net
        self.criterion = nn.CrossEntropyLoss()
        self.train_acc, self.val_acc, self.test_acc = (Accuracy(task="multiclass", num_classes=3)
                                                       for _ in range(3))
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_start(self) -> None:
        self.val_loss.reset()
        self.val_acc.reset()
        self.val_acc_best.reset()

    def model_step(self, batch):
        x, y = batch
        logits = self.forward(x)
        return self.criterion(logits, y), logits.argmax(dim=1), y

    def training_step(self, batch, batch_idx):
        loss, preds, targets = self.model_step(batch)
        self.train_loss(loss)
        self.train_acc(preds, targets)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, preds, targets = self.model_step(batch)
        self.val_loss(loss)
        self.val_acc(preds, targets)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def test_step(self, batch, batch_idx):
        loss, preds, targets = self.model_step(batch)
        self.test_loss(loss)
        self.test_acc(preds, targets)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True, prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.hparams.optimizer(params=self.trainer.model.parameters())
        if self.hparams.scheduler is not None:
            scheduler = self.hparams.scheduler(optimizer=optimizer)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss",
                                                             "interval": "epoch", "frequency": 1}}
        return {"optimizer": optimizer}
'''
CONFIGS = {
    "blobs.py": BLOBS,
    "template.py": TEMPLATE,
    "conf/datamodule/blobs.yaml": "_target_: blobs.Blobs\nbatch_size: 32\n",
    "conf/model/smallnet.yaml": textwrap.dedent("""\
        _target_: blobs.SmallNet
        num_features: ${data:num_features}
        num_classes: ${data:num_classes}
        lr: 0.05
        sync_dist: true
        """),
    "conf/datamodule/template_blobs.yaml": "_target_: template.BlobsData\nbatch_size: 64\n",
    "conf/model/template.yaml": textwrap.dedent("""\
        _target_: template.TemplateModule
        optimizer:
          _target_: torch.optim.Adam
          _partial_: true
          lr: 0.01
        scheduler:
          _target_: torch.optim.lr_scheduler.ReduceLROnPlateau
          _partial_: true
          mode: min
          factor: 0.1
          patience: 10
        net:
          _target_: template.SimpleDenseNet
          input_size: 8
          lin1_size: 32
          output_size: 3
        compile: false
        """),
}
# the lightning-style run of these tests; monitor=val/acc without mode: auto picks max
LIGHTNING_RUN = ["model=smallnet", "datamodule=blobs", "monitor=val/acc", "datamodule.batch_size=8",
                 "trainer.max_epochs=3"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A user's project outside the repo: their modules and conf/, and an empty folder to work in."""
    root = tmp_path_factory.mktemp("styles")
    for name, text in CONFIGS.items():
        (root / "proj" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "proj" / name).write_text(text)
    (root / "work").mkdir()
    return root


def their_env(project: Path) -> dict[str, str]:
    env = clean_env()
    env["PYTHONPATH"] += f":{project / 'proj'}"
    return env


def run(project: Path, *overrides: str, cwd: Path | None = None, check: bool = True):
    return train(cwd or project / "work", "--config-dir", str(project / "proj" / "conf"), *overrides,
                 env=their_env(project), check=check)


def column(run_dir: Path, name: str) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv") as file:
        return [float(row[name]) for row in csv.DictReader(file) if row.get(name)]


@pytest.fixture(scope="module")
def lightning_run(project) -> Path:
    cwd = project / "reference"
    cwd.mkdir()
    run(project, *LIGHTNING_RUN, cwd=cwd)
    [run_dir] = run_dirs(cwd)
    return run_dir


def test_lightning_style_code_trains_with_a_slash_monitor_and_flat_checkpoint_names(lightning_run, project):
    info = summary(lightning_run)
    assert info["status"] == "completed" and info["lightning"] == "lightning.pytorch"
    assert info["monitor"] == "val/acc" and info["mode"] == "max"  # mode=auto: an accuracy
    accuracy = column(lightning_run, "val/acc")
    assert len(accuracy) == 3 and info["best_metric"] == pytest.approx(max(accuracy))
    assert info["best_checkpoint"] == f"checkpoints/epoch={accuracy.index(max(accuracy))}-val_acc=" \
                                      f"{max(accuracy):.4f}.ckpt"
    # no folder was made from the slash of val/acc, not even an empty one
    assert all(p.is_file() for p in (lightning_run / "checkpoints").iterdir())
    assert sorted(p.name for p in (lightning_run / "checkpoints").iterdir())[-1] == "last.ckpt"
    assert set(info["test_metrics"]) == {"test/acc", "test/loss"} and info["test_metrics"]["test/acc"] > 0.6
    model = info["code"]["model"]
    assert model["class"] == "blobs.SmallNet" and model["file"] == str(project / "proj" / "blobs.py")
    assert model["git"] is None and info["code"]["dlops"]["version"]  # their folder is no git checkout


@pytest.mark.slow
def test_a_lightning_style_sweep_is_ranked_by_val_acc_as_a_maximum(project, capsys):
    cwd = project / "sweep"
    cwd.mkdir()
    run(project, "-m", *LIGHTNING_RUN[:3], "model.lr=0.005,0.2", "trainer.max_epochs=2", cwd=cwd)
    [sweep] = (cwd / "multirun").glob("*/*")
    jobs = {d.name: summary(d) for d in run_dirs(cwd, "multirun")}
    best = json.loads((sweep / "best.json").read_text())
    winner = max(jobs, key=lambda job: jobs[job]["best_metric"])
    assert best["monitor"] == "val/acc" and best["mode"] == "max" and best["run_dir"].endswith(winner)
    assert jobs["0"]["best_metric"] != jobs["1"]["best_metric"]


@pytest.mark.slow
def test_lightning_style_resume_after_sigterm_trains_exactly_as_without_a_stop(project, lightning_run):
    args = ["--config-dir", str(project / "proj" / "conf"), *LIGHTNING_RUN]
    process = start(project / "work", *args, env=their_env(project))
    run_dir = wait_for(project / "work", "outputs/*/*/summary.json", lambda s: s["epochs_completed"] >= 1,
                       process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143, finish(process)[-3000:]
    assert summary(run_dir)["status"] == "interrupted"
    run(project, f"resume={run_dir}")
    info = summary(run_dir)
    assert info["status"] == "completed" and info["epochs_completed"] == 3 and len(info["attempts"]) == 2
    assert column(run_dir, "val/acc") == column(lightning_run, "val/acc")  # each epoch once, same values
    mine, reference = (state_dict(d / "checkpoints" / "last.ckpt") for d in (run_dir, lightning_run))
    assert all(torch.equal(mine[k], reference[k]) for k in reference)


@pytest.mark.slow
def test_lightning_style_ddp_trains_and_a_per_process_monitor_stops_with_the_fix(project):
    """Two DDP jobs: val/acc logged with sync_dist=True trains; without it, each process has its
    own val/acc, and the run stops with the message naming the fix."""
    cwd = project / "ddp"
    cwd.mkdir()
    result = run(project, "-m", *LIGHTNING_RUN[:3], "trainer=ddp_cpu", "trainer.max_epochs=2",
                 "model.sync_dist=true,false", cwd=cwd, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    synced, unsynced = (summary(d) for d in run_dirs(cwd, "multirun"))
    assert synced["status"] == "completed" and synced["epochs_completed"] == 2
    assert unsynced["status"] == "failed" and unsynced["epochs_completed"] == 0
    message = unsynced["error"]["message"]
    assert message.startswith("monitor=val/acc differs between the 2 DDP processes (rank 0: ")
    assert 'self.log("val/acc", value, sync_dist=True)' in message
    assert unsynced["error"]["type"] == "ConfigError"


@pytest.mark.slow
def test_a_monitor_whose_direction_cannot_be_told_stops_before_training(project):
    result = run(project, *LIGHTNING_RUN[:2], "monitor=val/score", "debug=fast", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert ("mode=auto cannot tell whether a larger or a smaller val/score is better; add mode=max or "
            "mode=min") in output
    [run_dir] = [d for d in run_dirs(project / "work") if summary(d)["monitor"] == "val/score"]
    assert summary(run_dir)["status"] == "failed" and not (run_dir / "checkpoints").exists()


def test_lightning_style_run_evaluates_exports_and_serves_json_rows(lightning_run, project, monkeypatch,
                                                                   capsys):
    monkeypatch.syspath_prepend(str(project / "proj"))
    monkeypatch.setenv("DLOPS_TRUSTED_PACKAGES", "blobs")  # their package: its config may build it
    assert dlops(["eval", str(lightning_run)]) == 0
    [eval_dir] = (lightning_run / "eval").iterdir()
    metrics = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
    assert metrics["test/acc"] == pytest.approx(summary(lightning_run)["test_metrics"]["test/acc"], abs=1e-6)
    assert dlops(["export", str(lightning_run)]) == 0  # its example_input_array: batches are dicts
    info = json.loads((lightning_run / "export" / "model.json").read_text())
    assert info["verification"]["passed"] and info["input"]["shape"][1:] == [8]
    # served (no torch in the server) with JSON rows, answering what torch answers
    rows = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    server = Server(lightning_run)
    try:
        answer = httpx.post(f"{server.url}/predict", json={"inputs": rows.tolist()}, timeout=30)
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    from dlops.inference.restore import restore

    with torch.no_grad():
        expected = restore(lightning_run).model(rows)
    assert torch.allclose(torch.tensor(answer.json()["outputs"]), expected, atol=1e-5)


@pytest.fixture(scope="module")
def template_run(project) -> Path:
    cwd = project / "template"
    cwd.mkdir()
    run(project, "model=template", "datamodule=template_blobs", "monitor=val/acc", "trainer.max_epochs=2",
        "test=true", cwd=cwd)
    [run_dir] = run_dirs(cwd)
    return run_dir


@pytest.mark.slow
def test_a_template_style_module_tests_resumes_and_evaluates_from_plain_data_checkpoints(
        template_run, project, monkeypatch, capsys):
    info = summary(template_run)
    assert info["status"] == "completed" and info["lightning"] == "pytorch_lightning"
    assert info["test_metrics"]["test/acc"] > 0.5  # the best checkpoint loaded for the test step
    saved = torch.load(template_run / "checkpoints" / "last.ckpt", weights_only=True)  # data only
    assert saved["hyper_parameters"]["net"] == {"_target_": "template.SimpleDenseNet", "input_size": 8,
                                                "lin1_size": 32, "output_size": 3}
    assert saved["hyper_parameters"]["optimizer"]["_target_"] == "torch.optim.Adam"
    run(project, f"resume={template_run}", "trainer.max_epochs=3")
    info = summary(template_run)
    assert info["status"] == "completed" and info["epochs_completed"] == 3
    assert len(column(template_run, "val/acc")) == 3  # each epoch once
    monkeypatch.syspath_prepend(str(project / "proj"))
    monkeypatch.setenv("DLOPS_TRUSTED_PACKAGES", "template")
    assert dlops(["eval", str(template_run)]) == 0
    [eval_dir] = (template_run / "eval").iterdir()
    assert "test/acc" in json.loads((eval_dir / "metrics.json").read_text())["metrics"]
    # a checkpoint dlops did not write, holding the net as a pickled object: said so, never "corrupt"
    import template

    saved["hyper_parameters"]["net"] = template.SimpleDenseNet()
    torch.save(saved, template_run.parent / "theirs.ckpt")
    capsys.readouterr()
    assert dlops(["eval", str(template_run), "--ckpt", str(template_run.parent / "theirs.ckpt")]) == 2
    message = capsys.readouterr().err
    assert "holds pickled objects (template.SimpleDenseNet, torch.nn." in message
    assert "dlops loads data only" in message
    assert "corrupt" not in message and "\x1b" not in message
