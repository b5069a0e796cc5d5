"""Resume after a crash: SIGKILL, SIGTERM and SIGINT mid-run, then `resume=`; sweeps; the parts."""

import csv
import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from helpers import (
    epochs_with,
    finish,
    metric_rows,
    run_dirs,
    start,
    state_dict,
    summary,
    train,
    wait_for,
)
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb_records import offline_runs, run_contents

from dlops.callbacks.resumable import DDP_STOP_CHECK_EVERY, Resumable
from dlops.data.batches import TensorBatches
from dlops.data.mnist import MNISTDataModule
from dlops.errors import ConfigError, Interrupted
from dlops.lifecycle import checkpoints, signals
from dlops.lifecycle.resume import _resume_argv
from dlops.models.classifier import Classifier
from dlops.tracking.csv_logger import CSVLogger

BATCH = "datamodule.batch_size=256"  # 15 training batches per epoch
STEPS_PER_EPOCH = 15


def fingerprint(folder: Path) -> dict[str, bytes]:
    """Every file's bytes; of train.log, to which each start appends, only the first line."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    return {str(p.relative_to(folder)): p.read_bytes().split(b"\n")[0] if p.name == "train.log"
            else p.read_bytes() for p in files}


# ---------------------------------------------------------------- end to end (python train.py)

@pytest.mark.slow
def test_sigkill_after_epoch_3_then_resume_completes_with_each_row_once(tmp_path):
    epochs = 10  # ample room: killed as soon as epoch 3 is seen done, however fast the machine
    process = start(tmp_path, f"trainer.max_epochs={epochs}", BATCH, "checkpoint_every_n_steps=5")
    run_dir = wait_for(tmp_path, "outputs/*/*/summary.json", lambda s: s["epochs_completed"] >= 3, process)
    process.kill()
    process.wait()
    before = summary(run_dir)
    assert before["status"] == "running" and 3 <= before["epochs_completed"] < epochs  # killed, mid-run

    result = train(tmp_path, f"resume={run_dir}")
    info = summary(run_dir)
    assert info["status"] == "completed" and info["epochs_completed"] == epochs
    resumed_from = info["attempts"][1]["resumed_from"]
    assert resumed_from["global_step"] >= 3 * STEPS_PER_EPOCH  # at most 5 steps (one N) to redo
    assert info["attempts"][0]["status"] == "running" and info["started_at"] == before["started_at"]
    rows = metric_rows(run_dir)
    assert epochs_with(rows, "val_loss") == list(range(epochs))  # each validation row exactly once
    assert epochs_with(rows, "train_loss") == list(range(epochs))
    assert len(epochs_with(rows, "test_loss")) == 1
    val_loss = {int(r["epoch"]): float(r["val_loss"]) for r in rows if r["val_loss"]}
    best_epoch = min(val_loss, key=val_loss.get)
    assert info["best_metric"] == pytest.approx(val_loss[best_epoch])  # best over all epochs
    assert info["best_checkpoint"].startswith(f"checkpoints/epoch={best_epoch}-")
    assert (run_dir / info["best_checkpoint"]).is_file()
    assert "(attempt 2) from checkpoints/last.ckpt (epoch" in result.stdout + result.stderr


@pytest.mark.slow
def test_sigterm_saves_last_ckpt_and_resume_continues_every_tracker(tmp_path):
    # 4 epochs: the signal, sent once epoch 1 is done, still finds the run training
    process = start(tmp_path, "trainer.max_epochs=4", BATCH, "logger=[csv,tensorboard,wandb]")
    run_dir = wait_for(tmp_path, "outputs/*/*/summary.json", lambda s: s["epochs_completed"] >= 1, process)
    process.send_signal(signal.SIGTERM)
    output = finish(process)
    assert process.returncode == 143, output[-3000:]
    info = summary(run_dir)
    assert info["status"] == "interrupted" and "SIGTERM" in info["error"]["message"]
    assert f"resume={run_dir}" in output and "Traceback" not in output  # says how to continue
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)  # loadable, safely
    assert last["global_step"] >= STEPS_PER_EPOCH and not list(run_dir.rglob("*.tmp"))

    train(tmp_path, f"resume={run_dir}")
    info = summary(run_dir)
    assert info["status"] == "completed"
    assert [a.get("status") for a in info["attempts"]] == ["interrupted", None]
    rows = metric_rows(run_dir)
    assert epochs_with(rows, "val_loss") == [0, 1, 2, 3] == epochs_with(rows, "train_loss")
    # the same TensorBoard dir, one point per epoch; both attempts log to the same W&B run id
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("val_loss")] == [14, 29, 44, 59]
    runs = [run_contents(f) for f in offline_runs(run_dir)]
    assert len(runs) == 2 and {r["id"] for r in runs} == {info["wandb"]["id"]}
    assert [r["exit_code"] for r in runs] == [1, 0]


@pytest.mark.slow
def test_sweep_stopped_by_ctrl_c_in_job_2_resumes_only_jobs_2_and_3_exactly(tmp_path):
    # jobs 1-3 live in dirs 0-2 and train identically (only the name differs): job 1 is the reference
    process = start(tmp_path, "-m", "name=a,b,c", "trainer.max_epochs=4", BATCH)
    wait_for(tmp_path, "multirun/*/*/1/summary.json", lambda s: s["epochs_completed"] >= 1, process)
    process.send_signal(signal.SIGINT)
    output = finish(process)
    assert process.returncode == 130, output[-3000:]  # Ctrl-C stops the whole sweep
    [sweep] = tmp_path.glob("multirun/*/*")
    first = fingerprint(sweep / "0")
    assert summary(sweep / "0")["status"] == "completed" and not (sweep / "2").exists()
    assert summary(sweep / "1")["status"] == "interrupted"

    result = train(tmp_path, "-m", f"resume={sweep}")
    assert "0 already completed" in result.stdout + result.stderr
    assert fingerprint(sweep / "0") == first  # the completed job was not run again
    jobs = {d.name: summary(d) for d in run_dirs(tmp_path, "multirun")}
    assert sorted(jobs) == ["0", "1", "2"] and {j["status"] for j in jobs.values()} == {"completed"}
    assert len(jobs["1"]["attempts"]) == 2 and "attempts" not in jobs["2"]  # resumed; started
    assert [j["name"] for j in jobs.values()] == ["a", "b", "c"]
    assert OmegaConf.load(sweep / "1" / ".hydra" / "config.yaml").resume is None  # its own config kept
    # stopped mid-epoch and resumed, job 2 has the same rows and weights as job 1
    csv_file, last = Path("csv") / "metrics.csv", Path("checkpoints") / "last.ckpt"
    assert (sweep / "1" / csv_file).read_text() == (sweep / "0" / csv_file).read_text()
    mine, reference = state_dict(sweep / "1" / last), state_dict(sweep / "0" / last)
    assert all(torch.equal(mine[k], reference[k]) for k in reference)


@pytest.mark.slow
def test_resumed_sweep_whose_failed_job_fails_again_exits_1(tmp_path):
    first = train(tmp_path, "-m", "model.optimizer.lr=0.001,-1", "trainer.max_epochs=1", BATCH,
                  check=False)
    assert first.returncode == 1 and "1 of 2 jobs did not complete" in first.stderr
    [sweep] = tmp_path.glob("multirun/*/*")
    again = train(tmp_path, "-m", f"resume={sweep}", check=False)
    # job 0 is done and not counted; job 1 was tried again and still cannot run
    assert again.returncode == 1, again.stdout[-2000:] + again.stderr[-2000:]
    assert "1 of 1 jobs did not complete: job 1" in again.stderr and "lr must be" in again.stderr


@pytest.mark.slow
def test_completed_run_says_so_and_can_be_extended(tmp_path):
    train(tmp_path, "trainer.max_epochs=1", BATCH)
    [run_dir] = run_dirs(tmp_path)
    # train.log gets the resume's lines, the lock file the name of its latest holder
    files = {p: p.read_bytes() for p in run_dir.rglob("*")
             if p.is_file() and p.name not in ("train.log", ".dlops.lock")}

    result = train(tmp_path, f"resume={run_dir}")
    assert "already completed (1 epochs" in result.stdout + result.stderr
    assert {p: p.read_bytes() for p in files} == files  # nothing touched

    refused = train(tmp_path, f"resume={run_dir}", "model.optimizer.lr=0.1", check=False)
    assert refused.returncode == 1 and "model.optimizer.lr=0.1 cannot be given" in refused.stderr

    train(tmp_path, "resume=latest", "trainer.max_epochs=2")
    info = summary(run_dir)
    assert info["status"] == "completed" and info["epochs_completed"] == 2 and info["max_epochs"] == 2
    rows = metric_rows(run_dir)
    assert epochs_with(rows, "val_loss") == [0, 1] and epochs_with(rows, "test_loss") == [2]
    assert [a["overrides"] for a in info["attempts"]] == [["trainer.max_epochs=1", BATCH],
                                                         ["trainer.max_epochs=2"]]


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
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
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
