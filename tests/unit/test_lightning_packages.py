"""One run, one Lightning package: `lightning.pytorch` or `pytorch_lightning`, chosen from the
user's classes; dlops' own Lightning classes are made of it; a mixed pair is one message."""

import importlib
import pkgutil
import sys
import types

import pytest
from omegaconf import OmegaConf

import dlops
from dlops import lightning
from dlops.errors import ConfigError

PACKAGES = lightning.PACKAGES


@pytest.fixture(autouse=True)
def restore_package():
    yield
    lightning.use(lightning.DEFAULT)


@pytest.fixture
def user_module(monkeypatch) -> types.ModuleType:
    """A user's module `theirs` with a model and a datamodule of each package."""
    import lightning as L
    import pytorch_lightning as pl

    module = types.ModuleType("theirs")
    for prefix, package in (("L", L), ("PL", pl)):
        for name, base in (("Model", package.LightningModule), ("Data", package.LightningDataModule)):
            setattr(module, prefix + name, type(prefix + name, (base,), {"__module__": "theirs"}))
    monkeypatch.setitem(sys.modules, "theirs", module)
    return module


def config(model: str, datamodule: str):
    return OmegaConf.create({"model": {"_target_": model}, "datamodule": {"_target_": datamodule}})


@pytest.mark.parametrize(("model", "datamodule", "package"), [
    ("theirs.LModel", "theirs.LData", "lightning.pytorch"),
    ("theirs.PLModel", "theirs.PLData", "pytorch_lightning"),
    ("theirs.LModel", "dlops.data.mnist.MNISTDataModule", "lightning.pytorch"),
    ("theirs.PLModel", "dlops.data.mnist.MNISTDataModule", "pytorch_lightning"),
    ("dlops.models.classifier.Classifier", "theirs.PLData", "pytorch_lightning"),
    ("dlops.models.classifier.Classifier", "dlops.data.mnist.MNISTDataModule", "lightning.pytorch"),
])
def test_the_users_classes_choose_the_package_and_dlops_classes_follow(user_module, model, datamodule,
                                                                        package):
    assert lightning.choose(config(model, datamodule)) == package == lightning.current()
    from dlops.data.mnist import MNISTDataModule

    data = MNISTDataModule(batch_size=8)
    assert isinstance(data, MNISTDataModule)
    assert isinstance(data, importlib.import_module(package).LightningDataModule)
    lightning.check_instance(data, "datamodule", "LightningDataModule")


def test_a_mixed_pair_is_one_message_saying_which_class_comes_from_which_package(user_module):
    with pytest.raises(ConfigError) as raised:
        lightning.choose(config("theirs.PLModel", "theirs.LData"))
    message = str(raised.value)
    assert "datamodule._target_ theirs.LData is a lightning.pytorch class (import lightning as L)" in message
    assert ("model._target_ theirs.PLModel is a pytorch_lightning class (import pytorch_lightning as pl)"
            in message)


def test_an_instance_of_the_other_package_is_refused_by_name(user_module):
    lightning.use("lightning.pytorch")
    with pytest.raises(ConfigError, match="model._target_ made a pytorch_lightning LightningModule"):
        lightning.check_instance(user_module.PLModel(), "model", "LightningModule")
    with pytest.raises(ConfigError, match="made a int, not a LightningModule"):
        lightning.check_instance(1, "model", "LightningModule")


def adaptable_classes() -> list[type]:
    """Every dlops class that is made of the run's Lightning package."""
    for info in pkgutil.walk_packages(dlops.__path__, "dlops."):
        if info.name.startswith(("dlops.serve", "dlops.examples")):
            continue
        importlib.import_module(info.name)
    found, todo = [], [lightning.Adaptable]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.lightning_base and lightning.package_of(cls) is None:
            found.append(cls)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_every_dlops_lightning_class_is_made_of_the_runs_package(package):
    classes = adaptable_classes()
    names = {c.__name__ for c in classes}
    assert {"Classifier", "MNISTDataModule", "ModelCheckpoint", "CSVLogger", "WandbLogger", "MLFlowLogger",
            "TensorBoardLogger", "Resumable", "SummaryProgress", "MonitorCheck", "EvaluationPlots",
            "AtomicCheckpointIO", "NoProfiler", "ProgressBar"} <= names
    for cls in classes:
        made = lightning.made_of(cls, package)
        base = lightning.attribute(package, cls.lightning_base)
        assert issubclass(made, cls) and issubclass(made, base) and lightning.package_of(made) == package
        assert made.__qualname__ == cls.__qualname__  # Lightning keys callback state by it
        assert lightning.defining_class(made) is cls


def test_lightning_targets_in_configs_name_the_runs_package():
    node = OmegaConf.create({"_target_": "lightning.pytorch.Trainer", "profiler": {
        "_target_": "pytorch_lightning.profilers.SimpleProfiler"}, "callbacks": [
        {"_target_": "lightning.pytorch.callbacks.EarlyStopping"}, {"_target_": "mine.Callback"}]})
    lightning.use("pytorch_lightning")
    lightning.for_run(node)
    assert node._target_ == "pytorch_lightning.Trainer"
    assert node.profiler._target_ == "pytorch_lightning.profilers.SimpleProfiler"
    assert [c._target_ for c in node.callbacks] == ["pytorch_lightning.callbacks.EarlyStopping",
                                                    "mine.Callback"]
    lightning.use("lightning.pytorch")
    assert lightning.for_run(node)._target_ == "lightning.pytorch.Trainer"
