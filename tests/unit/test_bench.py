"""The benchmark measures equal work: the same data for each pipeline, a timer inside a real run."""

import sys
from pathlib import Path

import torch
from helpers import datamodule

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from common import N_TRAIN, N_VAL  # noqa: E402

from dlops.data.mnist import MNISTDataModule  # noqa: E402


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
