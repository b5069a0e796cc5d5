"""What every dlops datamodule shares: uint8 image tensors per split, served as sliced batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from dlops.data.batches import TensorBatches
from dlops.data.folds import check_folds, fold_split
from dlops.errors import ConfigError
from dlops.lightning import Adaptable

if TYPE_CHECKING:
    import lightning.pytorch as pl


@dataclass
class Split:
    """One split: images as uint8 `(N, C, H, W)` and integer class labels `(N,)`."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def undersampled(self) -> Split:
        """Every class cut to the size of the smallest, keeping a fixed random choice."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(0))
        labels = self.labels[order]
        smallest = int(torch.bincount(labels).min())
        keep = torch.cat([order[labels == c][:smallest] for c in labels.unique()])
        keep = keep.sort().values
        return Split(self.images[keep], self.labels[keep])


def _batches_trained(trainer: pl.Trainer | None) -> int:
    """Training batches of the current epoch already trained (what a mid-epoch checkpoint has seen)."""
    if trainer is None:
        return 0
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


class InMemoryDataModule(Adaptable):
    """Base class: subclasses implement `load()` returning the train, val and test splits.

    With `folds=K, fold=i`, train and val become fold i of a K-fold split of train + val
    (`dlops.data.folds`), drawn from `split_seed`. A LightningDataModule of the run's Lightning
    package (see dlops.lightning).
    """

    lightning_base = "LightningDataModule"

    def __init__(self, batch_size: int = 32, seed: int = 0, balance: str | None = None,
                 folds: int | None = None, fold: int | None = None, split_seed: int = 1234) -> None:
        super().__init__()
        check_folds(folds, fold)
        self.folds, self.fold, self.split_seed = folds, fold, split_seed
        self.batch_size = batch_size
        self.seed = seed  # the run's seed: shuffles the training batches each epoch
        if balance not in (None, "weight", "undersample"):
            raise ConfigError(
                f"datamodule.balance must be weight, undersample or null, got {balance!r}."
            )
        self.balance = balance
        self.class_names: list[str] = []
        self.splits: dict[str, Split] = {}

    def load(self) -> tuple[Split, Split, Split]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train, val, test = self.load()
        if self.folds is not None:
            train, val = fold_split(train, val, test, self.folds, self.fold, self.split_seed)
        if self.balance == "undersample":
            train, val, test = train.undersampled(), val.undersampled(), test.undersampled()
        for name, split in (("train", train), ("val", val), ("test", test)):
            if len(split) == 0:
                raise ConfigError(f"the {name} split is empty: check the data and split fractions.")
        self.splits = {"train": train, "val": val, "test": test}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_weights(self) -> list[float] | None:
        """With `balance: weight`, loss weights that make every class count equally in training."""
        if self.balance != "weight":
            return None
        counts = torch.bincount(self.splits["train"].labels, minlength=self.num_classes).float()
        return (counts.sum() / (len(counts) * counts.clamp(min=1))).tolist()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.splits["train"].images.shape[1:])

    @property
    def mean(self) -> float:
        """Mean pixel value of the training images, scaled to [0, 1] (for normalisation)."""
        return (self.splits["train"].images.float() / 255).mean().item()

    @property
    def std(self) -> float:
        """Standard deviation of the training images' pixels, scaled to [0, 1]."""
        return (self.splits["train"].images.float() / 255).std().item()

    def _batches(self, split: str, shuffle: bool) -> TensorBatches:
        trainer = self.trainer
        return TensorBatches(
            self.splits[split].images,
            self.splits[split].labels,
            self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            epoch=lambda: trainer.current_epoch if trainer is not None else 0,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            position=lambda: _batches_trained(trainer) if shuffle else 0,
        )

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        images, labels = batch
        if images.device == device and labels.device == device:
            return batch  # on the CPU: skip Lightning's walk through the batch, every step
        return images.to(device), labels.to(device)

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", shuffle=False)
