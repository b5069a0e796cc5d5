"""Metric names with any separator: their stage, their direction under mode=auto, file-safe forms."""

import pytest

from dlops.errors import ConfigError
from dlops.rundir.metrics import file_safe, infer_mode, resolve_mode, stage, without_stage


@pytest.mark.parametrize("name", ["val_loss", "val/loss", "train.nll", "val-mae", "valRmse",
                                  "val_baseline_mae", "test/error_rate", "val/perplexity"])
def test_losses_and_errors_are_minimised(name):
    assert infer_mode(name) == "min"
    assert resolve_mode(name, "auto") == "min"


@pytest.mark.parametrize("name", ["val_acc", "val/acc", "val/auroc", "test/f1", "val_precision",
                                  "val/recall", "val_r2", "val/iou", "val_dice", "valAccuracy", "val/top5"])
def test_accuracy_like_names_are_maximised(name):
    assert infer_mode(name) == "max"
    assert resolve_mode(name, "auto") == "max"


@pytest.mark.parametrize("name", ["val/score", "val_metric", "epoch", "val_acc_loss"])
def test_a_name_that_cannot_be_told_asks_for_mode(name):
    assert infer_mode(name) is None
    with pytest.raises(ConfigError, match=r"mode=max or mode=min"):
        resolve_mode(name, "auto")


def test_an_explicit_mode_always_wins():
    assert resolve_mode("val_loss", "max") == "max"
    assert resolve_mode("val/score", "min") == "min"


@pytest.mark.parametrize(("name", "expected"), [("val_acc", "val"), ("val/acc", "val"), ("test.f1", "test"),
                                                ("train-loss", "train"), ("validation/iou", "val"),
                                                ("value_loss", None), ("epoch", None)])
def test_the_stage_is_read_whatever_the_separator(name, expected):
    assert stage(name) == expected


def test_the_name_without_its_stage():
    assert [without_stage(n) for n in ("val_acc", "val/acc", "train.loss", "epoch", "value_x")] == \
        ["acc", "acc", "loss", "epoch", "value_x"]


def test_file_safe_names_hold_no_directory_separator():
    assert file_safe("val/acc") == "val_acc"
    assert file_safe("a\\b/c") == "a_b_c"
