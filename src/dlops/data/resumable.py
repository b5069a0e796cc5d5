"""Exact mid-epoch resume for any datamodule whose training batches come from a plain DataLoader.

A plain `DataLoader` shuffles from the global random state and cannot skip batches, so a run
resumed mid-epoch would see a new order and re-train part of the epoch. dlops rebuilds such a
loader (map-style dataset, `batch_size` set, sequential or random sampler) with the same
arguments and a sampler whose order depends only on `seed + epoch` and that skips the batches the
checkpoint had already trained. Lightning stores and restores its position with the checkpoint
(a loader with `state_dict`/`load_state_dict`). Loaders that are already resumable (dlops' own
`TensorBatches`, torchdata's `StatefulDataLoader`) are left as they are; any other kind (an
`IterableDataset`, a custom sampler or batch sampler, a DataLoader subclass) restarts its
interrupted epoch from the start, which is said once in the log.
"""

import logging
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

log = logging.getLogger(__name__)


class ResumableSampler(DistributedSampler):
    """Lightning's own DDP sampler (an order from `seed + epoch`, a share per rank) that, once
    after a restore, skips the samples of the batches already trained in the restored epoch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_at: tuple[int, int] | None = None  # (epoch, samples to skip)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip = 0
        if self.resume_at is not None:
            epoch, samples = self.resume_at
            skip, self.resume_at = (samples if epoch == self.epoch else 0), None
        return iter(indices[skip:])


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position within the epoch is saved in checkpoints and restored."""

    trainer: Any = None

    def state_dict(self) -> dict[str, int]:
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current if self.trainer else None
        return {"epoch": self.sampler.epoch, "batches_done": progress.processed if progress else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_at = (state["epoch"], state["batches_done"] * self.batch_size)


def resumable(loader: Any, trainer: Any, seed: int) -> Any:
    """`loader` rebuilt to resume mid-epoch exactly, or as it is when it already can or cannot."""
    if callable(getattr(loader, "state_dict", None)) and callable(getattr(loader, "load_state_dict", None)):
        return loader
    if not (type(loader) is DataLoader and loader.batch_size is not None
            and type(loader.sampler) in (RandomSampler, SequentialSampler)):
        log.info("the training batches (%s) cannot be resumed mid-epoch exactly: a run resumed "
                 "mid-epoch starts that epoch's batches again", type(loader).__name__)
        return loader
    sampler = ResumableSampler(
        loader.dataset, num_replicas=trainer.world_size if trainer else 1,
        rank=trainer.global_rank if trainer else 0,
        shuffle=isinstance(loader.sampler, RandomSampler), seed=seed, drop_last=False)
    rebuilt = ResumableDataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
        timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
        prefetch_factor=loader.prefetch_factor, persistent_workers=loader.persistent_workers,
        pin_memory_device=loader.pin_memory_device)
    rebuilt.trainer = trainer
    return rebuilt


def make_training_resumable(datamodule: Any, seed: int) -> None:
    """Have `datamodule.train_dataloader()` hand Lightning a resumable loader (see `resumable`)."""
    make = datamodule.train_dataloader

    def train_dataloader() -> Any:
        return resumable(make(), datamodule.trainer, seed)

    datamodule.train_dataloader = train_dataloader
