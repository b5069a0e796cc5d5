"""Batches sliced from in-memory tensors: no per-item Python work on the hot path."""

from collections.abc import Callable, Iterator

import torch


class TensorBatches:
    """An iterable of `(images, labels)` batches cut from whole-dataset tensors.

    Shuffling draws one permutation per epoch from `seed + epoch`, so an epoch's order does
    not depend on how many epochs ran before in this process (resume gives the same order).
    Under data parallelism each rank takes an equal, disjoint share of every epoch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last

    def _indices(self) -> torch.Tensor | None:
        n = len(self.labels)
        if not self.shuffle and self.world_size == 1:
            return None
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch())
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        per_rank = n // self.world_size  # equal shares keep ranks in step
        return order[self.rank * per_rank : (self.rank + 1) * per_rank]

    def _count(self) -> int:
        return len(self.labels) // self.world_size

    def __len__(self) -> int:
        n = self._count()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self._indices()
        images, labels = self.images, self.labels
        if indices is not None:
            images, labels = images[indices], labels[indices]  # one gather per epoch
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield images[start : start + self.batch_size], labels[start : start + self.batch_size]
