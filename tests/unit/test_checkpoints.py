"""Checkpoints dlops writes are plain data: objects in hyperparameters become the config that built
them; a file that holds objects is named for what it is, never called corrupt."""

import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from dlops.errors import ConfigError
from dlops.lifecycle.checkpoints import AtomicCheckpointIO, read_checkpoint

NET = {"_target_": "theirs.SimpleDenseNet", "input_size": 8}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01}


def template_checkpoint() -> dict:
    """What Lightning saves for a module whose save_hyperparameters() holds its net and partials."""
    return {"state_dict": {"net.weight": torch.ones(2, 2)}, "epoch": 1, "global_step": 4, "loops": {},
            "hyper_parameters": {"net": nn.Linear(2, 2), "scheduler": None, "compile": False,
                                 "optimizer": functools.partial(torch.optim.Adam, lr=0.01),
                                 "where": Path("/data")},
            "hparams_name": "kwargs", "hparams_type": dict,
            "datamodule_hyper_parameters": {"batch_size": 64, "transform": lambda x: x}}


def test_objects_in_hyperparameters_are_saved_as_the_config_that_built_them(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO({"model": {"net": NET, "optimizer": ADAM, "scheduler": None}}).save_checkpoint(
        template_checkpoint(), path)
    saved = torch.load(path, weights_only=True)  # torch's safe loader reads all of it
    assert saved["hyper_parameters"] == {"net": NET, "optimizer": ADAM, "scheduler": None, "compile": False,
                                         "where": "/data"}
    assert torch.equal(saved["state_dict"]["net.weight"], torch.ones(2, 2)) and saved["epoch"] == 1
    # what no config built is described by its type, in words
    assert saved["datamodule_hyper_parameters"]["batch_size"] == 64
    described = saved["datamodule_hyper_parameters"]["transform"]
    assert described.startswith("<tests.unit.test_checkpoints.template_checkpoint.<locals>.<lambda>: not")
    assert "not plain data" in saved["hparams_type"] and read_checkpoint(path)["global_step"] == 4


def test_a_checkpoint_holding_pickled_objects_is_named_for_what_it_holds_never_corrupt(tmp_path):
    path = tmp_path / "theirs.ckpt"
    torch.save(template_checkpoint() | {"datamodule_hyper_parameters": {}}, path)
    with pytest.raises(ConfigError) as raised:
        read_checkpoint(path)
    message = str(raised.value)
    assert "holds pickled objects (" in message and "torch.nn.modules.linear.Linear" in message
    assert "functools.partial" in message and "dlops loads data only" in message
    assert "corrupt" not in message and "\x1b" not in message
