"""The bad-input catalogue (docs/bad-input.md): one test per row, through `python train.py`.

Each bad input must give one clear message (no traceback), a non-zero exit code, and leave
everything already written as it was.
"""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from helpers import clean_env, fast, run_dirs, summary, train

from dlops.data.export import write_image_folder
from dlops.data.mnist import MNISTDataModule
from dlops.models.classifier import Classifier

pytestmark = pytest.mark.slow


def fails(cwd: Path, *overrides: str, env: dict | None = None) -> str:
    """Run train.py expecting a clean failure; return its output."""
    result = train(cwd, *overrides, check=False, env=env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    return output


def fingerprint(folder: Path) -> dict[str, str]:
    """A hash per file under `folder` (train.log: only that it exists, as new lines are appended;
    .dlops.lock: not at all, as every process that asks for the run dir says who it is there)."""
    return {str(p.relative_to(folder)): "log" if p.name == "train.log" else
            hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".dlops.lock"}


def failed_with(cwd: Path, message: str) -> None:
    """The run dir made before the failure records it with the same message."""
    [run_dir] = run_dirs(cwd)
    info = summary(run_dir)
    assert info["status"] == "failed" and message in info["error"]["message"]


# ---------------------------------------------------------------- config

def test_unknown_config_group_option_lists_the_valid_ones(tmp_path):
    output = fails(tmp_path, "model=transformer")
    assert "Could not find 'model/transformer'" in output and "Available options in 'model'" in output
    assert "cnn" in output and "mlp" in output
    assert not (tmp_path / "outputs").exists()  # stopped before a run dir was made


def test_misspelt_key_names_it(tmp_path):
    output = fails(tmp_path, "trainer.max_epoch=3")
    assert "trainer.max_epoch is not an argument of Lightning's Trainer; did you mean trainer.max_epochs?" \
        in output
    output = fails(tmp_path, "datamodule.batchsize=3")
    assert "Key 'batchsize' is not in struct" in output and "full_key: datamodule.batchsize" in output
    assert not (tmp_path / "outputs").exists()  # stopped before a run dir was made


def test_an_accelerator_lightning_knows_passes_dlops_checks_and_lightning_says_why_not_here(tmp_path):
    output = fails(tmp_path, "trainer.accelerator=tpu", "debug=fast")
    assert "Error in call to target 'lightning.pytorch.trainer.trainer.Trainer'" in output
    assert "problem(s)" not in output  # dlops' own checks let it through
    failed_with(tmp_path, "torch_xla")


def test_unknown_trainer_argument(tmp_path):
    output = fails(tmp_path, "+trainer.max_epoch=3")
    assert "unexpected keyword argument 'max_epoch'" in output
    failed_with(tmp_path, "unexpected keyword argument 'max_epoch'")


def test_wrong_type(tmp_path):
    output = fails(tmp_path, "datamodule.batch_size=abc")
    assert "datamodule.batch_size must be an integer >= 1, got 'abc' (text)" in output
    failed_with(tmp_path, "datamodule.batch_size must be an integer >= 1")


def test_out_of_range_values_are_all_reported_at_once(tmp_path):
    output = fails(tmp_path, "model.optimizer.lr=-1", "datamodule.val_fraction=1.5", "seed=-3")
    assert "the config has 4 problem(s)" in output
    for line in ("model.optimizer.lr must be a number > 0, got -1",
                 "datamodule.val_fraction must be a number in (0, 1), got 1.5",
                 "seed must be an integer from 0 to 4294967295, got -3",
                 "datamodule.val_fraction + datamodule.test_fraction must be below 1"):
        assert line in output


def test_gpu_trainer_without_a_gpu(tmp_path):
    output = fails(tmp_path, "trainer=gpu")  # the tests hide every GPU (CUDA_VISIBLE_DEVICES="")
    assert "trainer.accelerator=gpu but no GPU is visible to this process; use trainer=cpu" in output
    failed_with(tmp_path, "no GPU is visible")


# ---------------------------------------------------------------- data

def test_missing_data_dir(tmp_path):
    output = fails(tmp_path, "datamodule.source=torchvision", "datamodule.download=false",
                   f"datamodule.data_dir={tmp_path / 'nowhere'}")
    assert f"MNIST IDX files are missing from {tmp_path / 'nowhere' / 'MNIST' / 'raw'}" in output


@pytest.fixture
def digits(tmp_path) -> Path:
    """A small real image folder: digits/{train,test}/<digit>/*.png."""
    write_image_folder(tmp_path / "digits", per_class=4, test_fraction=0.5)
    return tmp_path / "digits"


def test_empty_class_folder(tmp_path, digits):
    for image in (digits / "train" / "3").iterdir():
        image.unlink()
    before = fingerprint(digits)
    output = fails(tmp_path, "datamodule=image_folder", f"datamodule.root={digits}", *fast())
    assert f"class folder {digits / 'train' / '3'} holds no images" in output
    assert fingerprint(digits) == before


def test_corrupt_image(tmp_path, digits):
    broken = next((digits / "test" / "7").iterdir())
    broken.write_bytes(b"not a png")
    before = fingerprint(digits)
    output = fails(tmp_path, "datamodule=image_folder", f"datamodule.root={digits}", *fast())
    assert f"cannot read image {broken}" in output and "Remove or replace the file" in output
    assert fingerprint(digits) == before


def test_class_folders_differ_between_train_and_test(tmp_path, digits):
    (digits / "test" / "9").rename(digits / "test" / "nine")
    output = fails(tmp_path, "datamodule=image_folder", f"datamodule.root={digits}", *fast())
    assert "class folders differ between train and test" in output and "'nine'" in output


def test_fold_outside_the_folds(tmp_path):
    output = fails(tmp_path, "datamodule.folds=3", "datamodule.fold=3", *fast())
    message = "datamodule.fold must be an integer from 0 to 2 with datamodule.folds=3, got 3"
    assert message in output and "-m datamodule.folds=3 datamodule.fold=0,1,2" in output
    failed_with(tmp_path, message)


def test_search_space_optuna_cannot_use(tmp_path):
    output = fails(tmp_path, "-m", "hparams_search=mnist_optuna", "hydra.sweep.dir=study", "model=glob(*)")
    assert "model=glob(*) cannot be searched by Optuna; write the space as choice(a, b)" in output
    # stopped before the study or any trial: the sweep dir holds only its lock (one sweep at a time)
    assert [p.name for p in (tmp_path / "study").iterdir()] == [".dlops.lock"]


# ---------------------------------------------------------------- checkpoints and resume

@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A completed run (one epoch of one batch), copied by each test that damages it."""
    cwd = tmp_path_factory.mktemp("finished")
    train(cwd, "debug=fast")
    return run_dirs(cwd)[0]


def copy_run(run_dir: Path, cwd: Path) -> Path:
    copy = cwd / "outputs" / "2026-01-01" / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy


def test_corrupt_or_truncated_checkpoint(tmp_path, finished):
    run_dir = copy_run(finished, tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # cut off mid-file
    before = fingerprint(run_dir)
    output = fails(tmp_path, f"resume={run_dir}", "trainer.max_epochs=2")
    assert f"checkpoint {last} is corrupt or truncated" in output
    assert fingerprint(run_dir) == before  # the run's files, summary.json included, are untouched


def test_checkpoint_of_another_model(tmp_path, finished):
    run_dir = copy_run(finished, tmp_path)
    cnn = Classifier({"_target_": "dlops.models.nets.CNN", "channels": [4]},
                     {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01})
    data = MNISTDataModule(batch_size=256)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(cnn, datamodule=data)
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")  # a real one, of a CNN
    before = fingerprint(run_dir)
    output = fails(tmp_path, f"resume={run_dir}", "trainer.max_epochs=2")
    assert "belongs to another model: its net is {'_target_': 'dlops.models.nets.CNN'" in output
    assert fingerprint(run_dir) == before


@pytest.mark.parametrize("status", ["diverged", "running"])
def test_resume_of_a_diverged_or_still_running_run(tmp_path, finished, status):
    run_dir = copy_run(finished, tmp_path)
    info = summary(run_dir)
    # "running": as if this very pytest process were the run, still alive
    info.update(status=status, pid=os.getpid(), started_at_unix=time.time())
    (run_dir / "summary.json").write_text(json.dumps(info))
    before = fingerprint(run_dir)
    output = fails(tmp_path, f"resume={run_dir}")
    expected = "diverged (training loss not finite); resuming would diverge again" if status == "diverged" \
        else f"is still running (pid {os.getpid()}"
    assert expected in output and fingerprint(run_dir) == before


def test_run_dir_that_already_holds_a_run(tmp_path, finished):
    run_dir = copy_run(finished, tmp_path)
    before = fingerprint(run_dir)
    output = fails(tmp_path, f"hydra.run.dir={run_dir}")
    assert f"{run_dir} already holds a run; continue it with resume={run_dir}" in output
    assert fingerprint(run_dir) == before


@pytest.mark.parametrize("kind", ["not a run", "missing"])
def test_resume_of_a_dir_that_is_not_a_run(tmp_path, kind):
    target = tmp_path / "notes"
    if kind == "not a run":
        target.mkdir()
        (target / "readme.txt").write_text("keep me")
    output = fails(tmp_path, f"resume={target}")
    if kind == "not a run":
        assert "not a dlops run directory (no .hydra/config.yaml)" in output
    else:
        assert "is not a directory" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == (["notes"] if kind == "not a run" else [])


@pytest.mark.parametrize("where", ["hydra.run.dir", "cwd"])
def test_output_dir_not_writable(tmp_path, where):
    # /sys refuses new folders even to root, so this holds however the tests are run
    if where == "cwd":
        output = fails(Path("/sys"), *fast())
        assert "cannot create the run directory /sys/outputs/" in output
    else:
        output = fails(tmp_path, "hydra.run.dir=/sys/dlops-run", *fast())
        assert "cannot create the run directory /sys/dlops-run: Operation not permitted" in output
    assert "Start python train.py from a folder you can write to" in output


def test_disk_full_while_saving_a_checkpoint(tmp_path):
    env = clean_env(DLOPS_SIMULATE_DISK_FULL="last.ckpt:2")  # the 2nd last.ckpt write fails halfway
    output = fails(tmp_path, *fast(), env=env)
    [run_dir] = run_dirs(tmp_path)
    assert "no space left on the device while writing" in output and f"resume={run_dir}" in output
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)  # the previous one
    assert last["epoch"] == 0 and not list(run_dir.rglob("*.tmp"))
    assert summary(run_dir)["status"] == "failed"

    train(tmp_path, f"resume={run_dir}")  # once there is space again, nothing is missing
    info = summary(run_dir)
    assert info["status"] == "completed" and info["epochs_completed"] == 2
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:] if r.split(",")[-1]] == ["0", "1"]  # val rows, once each
