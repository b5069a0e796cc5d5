"""End to end: `python train.py` as a user runs it, artifacts read back from the run dir."""

import csv
import subprocess
import sys

import pytest
import torch
from helpers import TRAIN, clean_env, fast, run_dirs, summary, train, unasked_warnings, write_idx

from dlops.cli import main as dlops


def metric_rows(run_dir):
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def per_epoch(rows, metric):
    return {int(r["epoch"]): float(r[metric]) for r in rows if r.get(metric)}


def test_default_run_trains_offline_to_97_percent(tmp_path):
    result = train(tmp_path)
    [run_dir] = run_dirs(tmp_path)
    output = result.stdout + result.stderr
    # output to a pipe, not a terminal: no progress bar, a line per epoch instead; no noise
    assert "it/s]" not in output and "epoch 9/9: " in output  # epochs 0..9, as Lightning numbers them
    assert "Tip:" not in output and "LeafSpec" not in output and "srun" not in output  # (CI has SLURM)
    assert unasked_warnings(output) == []  # no warning that asks nothing of the user
    assert run_dir.parent.parent.name == "outputs"  # outputs/<date>/<time>
    info = summary(run_dir)
    assert info["status"] == "completed" and info["epochs_completed"] == 10
    assert info["last_metrics"]["val_acc"] >= 0.97
    rows = metric_rows(run_dir)
    for metric in ("train_loss", "val_loss", "val_acc"):
        assert sorted(per_epoch(rows, metric)) == list(range(10)), metric
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "train.log").is_file()
    best = run_dir / info["best_checkpoint"]
    assert best.is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert info["best_metric"] == pytest.approx(min(per_epoch(rows, "val_loss").values()))
    assert set(info["test_metrics"]) == {"test_loss", "test_acc", "test_auroc"}
    torch.load(best, weights_only=True)  # safe loading works on our checkpoints
    assert (run_dir / "plots" / "learning_curves.png").stat().st_size > 10_000


def test_a_sweep_of_seed_experiments_001_and_003_gives_each_job_its_own_run_dir(tmp_path):
    train(tmp_path, "-m", "experiment=001,003", "trainer.max_epochs=1,2")
    jobs = run_dirs(tmp_path, "multirun")
    assert [d.name for d in jobs] == ["0", "1", "2", "3"] and len({d.parent for d in jobs}) == 1
    assert [summary(d)["name"] for d in jobs] == ["001", "001", "003", "003"]
    for epochs, run_dir in zip((1, 2, 1, 2), jobs, strict=True):
        assert summary(run_dir)["status"] == "completed"
        assert sorted(per_epoch(metric_rows(run_dir), "val_loss")) == list(range(epochs))
        assert list((run_dir / "checkpoints").glob("epoch=*.ckpt"))


@pytest.mark.slow
def test_two_runs_started_together_never_share_a_dir(tmp_path):
    procs = [subprocess.Popen([sys.executable, str(TRAIN), "debug=fast"], cwd=tmp_path, env=clean_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 2 and {summary(d)["status"] for d in dirs} == {"completed"}


@pytest.mark.slow
def test_image_folder_made_by_make_dataset(tmp_path):
    assert dlops(["make-dataset", str(tmp_path / "digits"), "--per-class", "30"]) == 0
    train(tmp_path, "datamodule=image_folder", f"datamodule.root={tmp_path / 'digits'}", *fast())
    info = summary(run_dirs(tmp_path)[0])
    assert info["status"] == "completed" and info["last_metrics"]["val_acc"] > 0.5


@pytest.mark.slow
def test_training_on_torchvision_idx_files_completes(tmp_path):
    write_idx(tmp_path / "data" / "MNIST" / "raw", n_train=1000, n_test=200)
    train(tmp_path, "datamodule.source=torchvision", f"datamodule.data_dir={tmp_path / 'data'}",
          "datamodule.download=false", *fast())
    assert summary(run_dirs(tmp_path)[0])["status"] == "completed"

