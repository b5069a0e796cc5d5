"""The benchmark measures equal work: the same data for each pipeline, a timer inside a real run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import N_TRAIN, N_VAL, make_data  # noqa: E402
from epoch_timer import epoch_seconds, train_seconds  # noqa: E402

from dlops.data.mnist import MNISTDataModule  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench-data")
    make_data(root)
    return root


def datamodule(cls: type, data_dir: Path) -> MNISTDataModule:
    dm = cls(source="torchvision", data_dir=str(data_dir), download=False, positive_digit=None,
             batch_size=64)
    dm.setup("fit")
    return dm


def test_dlops_trains_on_60000_images_of_the_bench_data(data_dir):
    dm = datamodule(MNISTDataModule, data_dir)
    assert (len(dm.splits["train"]), len(dm.splits["val"])) == (N_TRAIN, N_VAL) == (60_000, 10_588)
    assert dm.num_classes == 10 and dm.input_shape == (1, 28, 28)


def test_per_item_pipeline_serves_the_same_pixels(data_dir):
    from torchvision_mnist import PerItemMNISTDataModule

    ours = datamodule(MNISTDataModule, data_dir)
    theirs = datamodule(PerItemMNISTDataModule, data_dir)
    (x1, y1), (x2, y2) = next(iter(ours.val_dataloader())), next(iter(theirs.val_dataloader()))
    assert x2.dtype == torch.float32 and x2.shape == x1.shape
    torch.testing.assert_close(x2, x1.float(), atol=1e-3, rtol=0)  # ToTensor + Normalize per item
    assert torch.equal(y1, y2)


@pytest.mark.slow
def test_epoch_timer_times_a_real_run(tmp_path):
    timing = tmp_path / "timing.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "bench")]),
           "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "trainer.max_epochs=2",
         "datamodule.batch_size=128",
         "+callbacks.epoch_timer._target_=epoch_timer.EpochTimer",
         f"+callbacks.epoch_timer.path={timing}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    times = json.loads(timing.read_text())
    assert times["fit_start"] < times["first_step"] < times["epoch_starts"][1] < times["fit_end"]
    epochs, training = epoch_seconds(times), train_seconds(times)
    assert len(epochs) == len(training) == 2
    assert all(0 < t < e for t, e in zip(training, epochs, strict=True))
    assert sum(epochs) == pytest.approx(times["fit_end"] - times["epoch_starts"][0])
    assert len(epoch_seconds(times, "cpu_")) == 2
    summary = json.loads(next(tmp_path.glob("outputs/*/*/summary.json")).read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
