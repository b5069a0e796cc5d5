"""Build a run's datamodule and model from its config: the one place that instantiates them.

dlops asks nothing of the two classes beyond Lightning's interfaces. A model learns facts about
the data only when its config asks for them with `${data:NAME}` (e.g. `num_classes:
${data:num_classes}`): the value is the datamodule's attribute NAME, read once the datamodule
is set up. See README, "Bring your own model and data".
"""

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from dlops import lightning
from dlops.data.resumable import make_training_resumable
from dlops.lifecycle import resolvers
from dlops.rundir import layout


def use_lightning_of(cfg: DictConfig) -> str:
    """Choose the run's Lightning package from its model's and datamodule's classes (see
    dlops.lightning) and point the Lightning `_target_`s of the trainer, callbacks and loggers at it."""
    package = lightning.choose(cfg)
    for node in ("trainer", "callbacks", "logger"):
        if cfg.get(node):
            lightning.for_run(cfg[node])
    return package


def build_datamodule(cfg: DictConfig, stage: str = "fit") -> Any:
    """Instantiate `cfg.datamodule`, prepare and set it up for `stage`; `${data:...}` then reads it."""
    datamodule = instantiate(cfg.datamodule)
    lightning.check_instance(datamodule, "datamodule", "LightningDataModule")
    datamodule.prepare_data()
    datamodule.setup(stage)
    resolvers.set_datamodule(datamodule)
    if stage == "fit":
        make_training_resumable(datamodule, cfg.seed)
    return datamodule


def build_model(cfg: DictConfig, datamodule: Any) -> Any:
    """Instantiate `cfg.model`, its `${data:...}` values read from `datamodule`."""
    resolvers.set_datamodule(datamodule)
    model = instantiate(cfg.model)
    lightning.check_instance(model, "model", "LightningModule")
    return model


def build_callbacks(cfg: DictConfig, run_dir: Path, summary: dict[str, Any], loggers: list) -> list:
    """The config's callbacks, around the ones every run has, in the order Lightning must run them."""
    from dlops.callbacks.progress import MonitorCheck, SummaryProgress
    from dlops.callbacks.pruning import pruning_callbacks
    from dlops.callbacks.resumable import Resumable

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    # the monitor logs even a constant learning rate: kept where the model config sets a scheduler
    if not (cfg.model.get("scheduler") and loggers):
        callbacks = [c for c in callbacks if type(c).__name__ != "LearningRateMonitor"]
    # first of the checks at an epoch's end: an unknown monitor stops the run with dlops' message
    callbacks.insert(0, MonitorCheck(cfg.monitor))
    # last.ckpt first, then summary.json: the summary's progress never runs ahead of the checkpoint
    callbacks.append(Resumable(run_dir / layout.CHECKPOINTS, cfg.get("checkpoint_every_n_steps")))
    callbacks.append(SummaryProgress(str(run_dir), summary))
    return callbacks + pruning_callbacks(cfg)  # a trial of dlops' Optuna sweeper: after SummaryProgress


def can_test(model: Any, datamodule: Any) -> bool:
    """Whether `test=true` can test: the model has a `test_step` and the datamodule test data."""
    is_overridden = lightning.module("utilities.model_helpers").is_overridden
    return is_overridden("test_step", model) and is_overridden("test_dataloader", datamodule)
