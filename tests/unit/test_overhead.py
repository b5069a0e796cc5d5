"""The overhead removals keep behaviour: what they skip is work whose result is known."""

import contextlib
import copy
import os

import lightning.pytorch as pl
import pytest
import torch
from hydra.core.config_store import ConfigStore
from lightning.pytorch.callbacks import TQDMProgressBar
from omegaconf import OmegaConf
from torch import nn

from dlops.data.base import InMemoryDataModule
from dlops.launch import share_config_store
from dlops.models.classifier import Classifier
from dlops.overhead import NoProfiler, skip_gpu_probes, trainer_speedups

NET = {"_target_": "dlops.models.nets.MLP", "hidden_sizes": [8]}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001}


def test_classifier_sets_the_hook_name_directly_and_still_registers_modules():
    model = Classifier(net=NET, optimizer=ADAM)
    model._current_fx_name = "training_step"
    assert model.__dict__["_current_fx_name"] == "training_step"
    model.head = nn.Linear(2, 2)
    model.scale_param = nn.Parameter(torch.ones(1))
    assert "head" in model._modules and "scale_param" in model._parameters
    assert "head" not in model.__dict__


def test_the_training_entry_shares_the_config_store():
    share_config_store()  # what dlops.launch does before Hydra starts
    store = ConfigStore.instance()
    assert copy.deepcopy(store) is store
    assert copy.deepcopy({"store": store})["store"] is store


def _device_count_calls(monkeypatch, steps: int) -> int:
    """How often `steps` Adam steps ask torch.cuda for its device count."""
    calls = []
    count = torch.cuda.device_count
    monkeypatch.setattr(torch.cuda, "device_count", lambda: calls.append(1) or count())
    weight = nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([weight])
    for _ in range(steps):
        weight.sum().backward()
        optimizer.step()
    return len(calls)


def test_without_a_gpu_adam_stops_probing_for_one_at_every_step(monkeypatch):
    if not torch.cuda._is_compiled() or torch.cuda.device_count() > 0:
        pytest.skip("needs a CUDA build of torch on a machine without a GPU")
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # as importing Lightning sets it
    assert _device_count_calls(monkeypatch, 5) >= 5  # a probe (an NVML load) every step
    skip_gpu_probes()
    assert "PYTORCH_NVML_BASED_CUDA_CHECK" not in os.environ
    assert _device_count_calls(monkeypatch, 5) == 0 and not torch.cuda.is_available()


def test_speedups_keep_a_configured_profiler_and_drop_the_bar_off_a_terminal():
    bar, other = TQDMProgressBar(), pl.Callback()
    callbacks, extra = trainer_speedups(OmegaConf.create({"profiler": None}), [bar, other])
    assert callbacks == [other] and extra["enable_progress_bar"] is False  # pytest's stdout: no tty
    assert isinstance(extra["profiler"], NoProfiler)
    _, extra = trainer_speedups(OmegaConf.create({"profiler": "simple"}), [bar])
    assert "profiler" not in extra
    with NoProfiler().profile("hook") as entered:
        assert entered is None
    assert isinstance(NoProfiler().profile("hook"), contextlib.AbstractContextManager)


def test_batches_already_on_the_device_are_not_walked_and_others_move():
    data = InMemoryDataModule()
    batch = (torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    assert data.transfer_batch_to_device(batch, torch.device("cpu"), 0) is batch
    moved = data.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert [t.device.type for t in moved] == ["meta", "meta"]
