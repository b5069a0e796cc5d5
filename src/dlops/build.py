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

from dlops.data.resumable import make_training_resumable
from dlops.errors import ConfigError
from dlops.lifecycle import resolvers
from dlops.rundir import layout


def build_datamodule(cfg: DictConfig, stage: str = "fit") -> Any:
    """Instantiate `cfg.datamodule`, prepare and set it up for `stage`; `${data:...}` then reads it."""
    import pytorch_lightning as pl

    datamodule = instantiate(cfg.datamodule)
    if not isinstance(datamodule, pl.LightningDataModule):
        raise ConfigError(f"datamodule._target_ {cfg.datamodule.get('_target_')} made a "
                          f"{type(datamodule).__name__}, not a LightningDataModule.")
    datamodule.prepare_data()
    datamodule.setup(stage)
    resolvers.set_datamodule(datamodule)
    if stage == "fit":
        make_training_resumable(datamodule, cfg.seed)
    return datamodule


def build_model(cfg: DictConfig, datamodule: Any) -> Any:
    """Instantiate `cfg.model`, its `${data:...}` values read from `datamodule`."""
    import pytorch_lightning as pl

    resolvers.set_datamodule(datamodule)
    model = instantiate(cfg.model)
    if not isinstance(model, pl.LightningModule):
        raise ConfigError(f"model._target_ {cfg.model.get('_target_')} made a "
                          f"{type(model).__name__}, not a LightningModule.")
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
    from pytorch_lightning.utilities.model_helpers import is_overridden

    return is_overridden("test_step", model) and is_overridden("test_dataloader", datamodule)
