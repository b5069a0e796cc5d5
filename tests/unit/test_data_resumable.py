"""dlops.data.resumable: a plain DataLoader's epoch order depends only on seed and epoch, and a
restored position skips exactly the batches already trained."""

from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, TensorDataset

from dlops.data.resumable import ResumableDataLoader, resumable


def trainer(processed: int = 0) -> SimpleNamespace:
    progress = SimpleNamespace(current=SimpleNamespace(processed=processed))
    return SimpleNamespace(world_size=1, global_rank=0,
                           fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))


def batches(loader) -> list[list[int]]:
    return [batch[0].tolist() for batch in loader]


def test_a_restored_loader_yields_exactly_the_rest_of_the_interrupted_epoch():
    data = TensorDataset(torch.arange(20), torch.zeros(20))
    first = resumable(DataLoader(data, batch_size=3, shuffle=True), trainer(processed=2), seed=7)
    assert isinstance(first, ResumableDataLoader)
    first.sampler.set_epoch(4)
    epoch = batches(first)
    assert sorted(sum(epoch, [])) == list(range(20)) and epoch != sorted(epoch)  # shuffled, complete
    state = first.state_dict()
    assert state == {"epoch": 4, "batches_done": 2}

    again = resumable(DataLoader(data, batch_size=3, shuffle=True), trainer(), seed=7)
    again.load_state_dict(state)
    again.sampler.set_epoch(4)
    assert batches(again) == epoch[2:]  # the rest of epoch 4, in its order
    assert batches(again) == epoch  # and the next pass over that epoch is whole again
    again.sampler.set_epoch(5)
    assert batches(again) != epoch


def test_loaders_that_cannot_be_rebuilt_or_need_not_be_are_left_as_they_are():
    data = TensorDataset(torch.arange(8))
    custom = DataLoader(data, batch_sampler=[[0, 1], [2, 3]])
    assert resumable(custom, trainer(), seed=0) is custom
    stateful = SimpleNamespace(state_dict=dict, load_state_dict=lambda state: None)
    assert resumable(stateful, trainer(), seed=0) is stateful
