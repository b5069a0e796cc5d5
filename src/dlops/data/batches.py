"""Batches sliced from in-memory tensors: no per-item Python work on the hot path."""

from collections.abc import Callable, Iterator

import torch


class TensorBatches:
    """An iterable of `(images, labels)` batches cut from whole-dataset tensors.

    Shuffling draws one permutation per epoch from `seed + epoch`, so an epoch's order does
    not depend on how many epochs ran before in this process (resume gives the same order).
    Under data parallelism each rank takes an equal, disjoint share of every epoch.

    Resumable mid-epoch: `state_dict()` records the epoch and how many of its batches were
    trained (`position`, supplied by the trainer), and after `load_state_dict()` the next pass
    over that epoch skips those batches, so a resumed run sees each batch exactly once.
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
        position: Callable[[], int] = lambda: 0,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.rank, self.world_size = rank, world_size
        self.position = position
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches to skip) after a restore

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch(), "batches_done": self.position()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_at = (state["epoch"], state["batches_done"])

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
        return -(-n // self.batch_size)  # the last batch may be smaller

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self._indices()
        images, labels = self.images, self.labels
        if indices is not None:
            images, labels = images[indices], labels[indices]  # one gather per epoch
        skip = 0
        if self.resume_at is not None:
            epoch, done = self.resume_at
            skip, self.resume_at = (done if epoch == self.epoch() else 0), None
        for start in range(skip * self.batch_size, len(self) * self.batch_size, self.batch_size):
            yield images[start : start + self.batch_size], labels[start : start + self.batch_size]
