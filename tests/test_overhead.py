"""The overhead removals keep behaviour: what they skip is work whose result is known."""

import copy
import runpy
from pathlib import Path

import torch
from hydra.core.config_store import ConfigStore
from torch import nn

from dlops.models.classifier import Classifier

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


def test_train_py_shares_the_config_store():
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "train.py"), run_name="imported")
    store = ConfigStore.instance()
    assert copy.deepcopy(store) is store
    assert copy.deepcopy({"store": store})["store"] is store
