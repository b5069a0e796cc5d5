"""Build a run's datamodule and model from its config: the one place that instantiates them.

dlops asks nothing of the two classes beyond Lightning's interfaces. A model learns facts about
the data only when its config asks for them with `${data:NAME}` (e.g. `num_classes:
${data:num_classes}`): the value is the datamodule's attribute NAME, read once the datamodule
is set up. See README, "Bring your own model and data".
"""

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from dlops.data.resumable import make_training_resumable
from dlops.errors import ConfigError
from dlops.lifecycle import resolvers


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
