"""Resume's parts in process: resumable batches, a SIGTERM at an epoch's end, the CSV logger cut back to
the checkpoint, atomic and corrupt checkpoints, resume argv, the DDP stop check."""

import csv
import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from helpers import ROOT, STEPS_PER_EPOCH, epochs_with
from omegaconf import OmegaConf

from dlops.callbacks.resumable import DDP_STOP_CHECK_EVERY, Resumable
from dlops.data.batches import TensorBatches
from dlops.data.mnist import MNISTDataModule
from dlops.errors import ConfigError, Interrupted
from dlops.lifecycle import checkpoints, signals
from dlops.lifecycle.resume import _resume_argv, hydra_argv
from dlops.models.classifier import Classifier
from dlops.rundir import lock
from dlops.tracking.csv_logger import CSVLogger

# ---------------------------------------------------------------- the parts

def test_batches_resume_mid_epoch_without_repeating_or_skipping():
    images, labels = torch.arange(10).view(10, 1, 1, 1), torch.arange(10)
    seen = []
    batches = TensorBatches(images, labels, 3, shuffle=True, seed=1, epoch=lambda: 2,
                            position=lambda: len(seen))
    for _, batch_labels in batches:
        seen.append(batch_labels)
        if len(seen) == 2:
            state = batches.state_dict()  # a checkpoint after two batches
            break
    fresh = TensorBatches(images, labels, 3, shuffle=True, seed=1, epoch=lambda: 2)
    fresh.load_state_dict(state)
    rest = [b for _, b in fresh]
    assert state == {"epoch": 2, "batches_done": 2} and len(rest) == 2
    assert torch.equal(torch.cat(seen + rest).sort().values, labels)  # every sample exactly once
    assert len(list(fresh)) == 4  # the next pass is a whole epoch again


def test_signal_in_an_epochs_last_batch_stops_at_its_end_and_resumes_without_gaps(tmp_path):
    class SigtermAt(pl.Callback):  # a real SIGTERM to this process, as the 15th step ends
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == STEPS_PER_EPOCH:
                os.kill(os.getpid(), signal.SIGTERM)

    def fit(callbacks: list, keep_rows: int | None = None, ckpt_path: Path | None = None) -> pl.Trainer:
        pl.seed_everything(0)
        model = Classifier({"_target_": "dlops.models.nets.MLP", "hidden_sizes": [16]},
                           {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01})
        trainer = pl.Trainer(max_epochs=2, logger=CSVLogger(str(tmp_path), keep_rows=keep_rows),
                             callbacks=[*callbacks, Resumable(tmp_path / "checkpoints")],
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                             log_every_n_steps=STEPS_PER_EPOCH)  # as a dlops run lowers it
        trainer.fit(model, datamodule=MNISTDataModule(batch_size=256), ckpt_path=ckpt_path, weights_only=True)
        return trainer

    signals.install()
    try:
        with pytest.raises(Interrupted):
            fit([SigtermAt()])
    finally:
        signals.restore()
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == STEPS_PER_EPOCH and saved["dlops"]["csv_rows"] == 2  # epoch 0, whole
    fit([], keep_rows=saved["dlops"]["csv_rows"], ckpt_path=last)
    with open(tmp_path / "csv" / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert epochs_with(rows, "val_loss") == [0, 1] and epochs_with(rows, "train_loss") == [0, 1]


def test_csv_logger_keeps_the_file_and_cuts_back_to_the_checkpoint(tmp_path):
    logger = CSVLogger(str(tmp_path))
    for epoch in range(3):
        logger.log_metrics({"val_loss": 1.0 / (epoch + 1), "epoch": epoch}, step=epoch)
        logger.log_metrics({"train_loss": 2.0, "epoch": epoch}, step=epoch)  # new column: rewrite
    assert logger.rows == 6
    resumed = CSVLogger(str(tmp_path), keep_rows=4)  # the checkpoint had seen epochs 0 and 1
    resumed.log_metrics({"val_loss": 0.25, "epoch": 2}, step=2)
    with open(tmp_path / "csv" / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(r["epoch"], bool(r["val_loss"])) for r in rows] == [("0", True), ("0", False), ("1", True),
                                                                   ("1", False), ("2", True)]
    assert CSVLogger(str(tmp_path)).rows == 5  # opening without keep_rows deletes nothing


def test_atomic_save_keeps_the_previous_checkpoint_when_the_disk_fills(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    checkpoints.save_atomic({"step": torch.tensor(1)}, path)
    monkeypatch.setenv(checkpoints.DISK_FULL, "last.ckpt:1")
    monkeypatch.setattr(checkpoints, "_writes", {})
    with pytest.raises(OSError, match="No space left"):
        checkpoints.save_atomic({"step": torch.tensor(2)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1 and os.listdir(tmp_path) == ["last.ckpt"]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "last.ckpt"
    checkpoints.save_atomic({"state_dict": {}, "loops": {}, "epoch": 0, "global_step": 1}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match="corrupt or truncated"):
        checkpoints.read_checkpoint(path)


def test_resume_argv_for_a_run_a_sweep_and_refusals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "outputs" / "2026-01-01" / "10-00-00"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (run / "summary.json").write_text(json.dumps({"started_at_unix": 1.0}))
    assert _resume_argv(["train.py", "resume=latest", "trainer.max_epochs=9"]) == [
        "train.py", "trainer.max_epochs=9", f"resume='{run}'", f"hydra.run.dir='{run}'"]  # quoted for Hydra
    with pytest.raises(ConfigError, match="model=cnn cannot be given"):
        _resume_argv(["train.py", f"resume={run}", "model=cnn"])
    with pytest.raises(ConfigError, match="not a dlops run directory"):
        _resume_argv(["train.py", f"resume={tmp_path}"])
    sweep = tmp_path / "multirun" / "s"
    sweep.mkdir(parents=True)

    def save_sweep(*task: str) -> None:
        sweeper = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}
        overrides = {"task": list(task), "hydra": ["hydra.mode=MULTIRUN", "hydra/launcher=basic"]}
        hydra = {"sweeper": sweeper, "overrides": overrides, "runtime": {"cwd": str(tmp_path)}}
        OmegaConf.save({"hydra": hydra}, sweep / "multirun.yaml")

    save_sweep("seed=1,2", "trainer.max_epochs=3")
    assert _resume_argv(["train.py", f"resume={sweep}", "trainer.max_epochs=4"]) == [
        "train.py", "-m", "seed=1,2", "hydra/launcher=basic", "trainer.max_epochs=4",
        f"hydra.sweep.dir='{sweep}'", f"resume='{sweep}'"]
    save_sweep("seed=1,2", "trainer.max_epochs=2,3")
    with pytest.raises(ConfigError, match="would change the jobs"):
        _resume_argv(["train.py", "-m", f"resume={sweep}", "trainer.max_epochs=5"])


class CountingStrategy:
    """A strategy's one method that `Resumable` calls, counting the collectives it would be."""

    def __init__(self) -> None:
        self.collectives = 0

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:  # noqa: A002
        self.collectives += 1
        return decision


@pytest.mark.parametrize("world_size, collectives", [(1, 64), (2, 64 // DDP_STOP_CHECK_EVERY)])
def test_the_stop_check_is_a_collective_every_batch_alone_and_every_n_under_ddp(world_size,
                                                                              collectives):
    trainer = SimpleNamespace(world_size=world_size, strategy=CountingStrategy())
    resumable = Resumable("checkpoints")
    try:
        signals.install()
        os.kill(os.getpid(), signal.SIGTERM)  # handled: a stop request, nothing more
        asked = [resumable._stop_requested(trainer, batch_idx) for batch_idx in range(64)]
        assert resumable._stop_requested(trainer)  # at an epoch's end: always asked
    finally:
        signals.restore()
    assert trainer.strategy.collectives == collectives + 1
    # every process sees the request at the same batches: each one alone, every Nth under DDP
    assert [i for i, stop in enumerate(asked) if stop] == [i for i in range(64)
                                                          if (i + 1) % (64 // collectives) == 0]


def test_torchrun_ranks_need_one_run_dir_given_and_only_rank_0_makes_and_locks_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, value in {"TORCHELASTIC_RUN_ID": "1", "WORLD_SIZE": "2", "RANK": "1", "GROUP_RANK": "1",
                        "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    train_py = str(ROOT / "train.py")
    with pytest.raises(SystemExit, match="give them all the same hydra.run.dir=DIR"):
        hydra_argv([train_py, "trainer=ddp_cpu"])
    with pytest.raises(SystemExit, match="the same hydra.sweep.dir=DIR"):
        hydra_argv([train_py, "-m", "seed=1,2"])
    run = tmp_path / "run"
    assert hydra_argv([train_py, f"hydra.run.dir={run}"]) == [train_py, f"hydra.run.dir={run}"]
    assert not run.exists()  # rank 0's to make
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 1\n")
    assert hydra_argv([train_py, f"resume={run}"])[-1] == f"hydra.run.dir='{run}'"
    assert lock.acquire(run)  # rank 1 did not take the lock (this process had not held it)
    lock.release(run)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("GROUP_RANK", "0")
    fresh = tmp_path / "fresh"
    hydra_argv([train_py, f"hydra.run.dir={fresh}"])
    assert fresh.is_dir() and not lock.acquire(fresh)  # rank 0 made it and holds its lock
    lock.release(fresh)
