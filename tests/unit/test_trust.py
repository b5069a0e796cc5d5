"""Which `_target_`s of a run dir's config `dlops eval/predict/export` build (dlops.inference.trust)."""

from pathlib import Path

import pytest

from dlops.errors import ConfigError
from dlops.inference import trust
from dlops.inference.restore import read_run_yaml

OWN_RUN = {"model": {"_target_": "dlops.models.classifier.Classifier",
                     "net": {"_target_": "dlops.models.nets.MLP", "hidden_sizes": [100]},
                     "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True},
                     "num_classes": "${data:num_classes}", "monitor": "${monitor}"},
           "trainer": {"_target_": "pytorch_lightning.Trainer",
                       "default_root_dir": "${hydra:runtime.output_dir}"},
           "callbacks": {"c": {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint"}}}


def refusal(config: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        trust.check(config, "RUN/.hydra/config.yaml")
    return str(caught.value)


def test_dlops_torch_and_lightning_classes_are_built_without_asking(monkeypatch):
    monkeypatch.delenv(trust.ENV, raising=False)
    trust.check(OWN_RUN, "RUN/.hydra/config.yaml")


@pytest.mark.parametrize("target, reason", [
    ("os.system", "outside the trusted packages"),
    ("torch.load", "outside the trusted packages"),
    ("torch.package.PackageExporter", "outside the trusted packages"),
    ("dlops.rundir.atomic.write_json", "a function, not a class"),
    ("dlops.rundir.summary.subprocess.Popen", "defined in subprocess, outside the trusted packages"),
    ("torch.nn.modules._functions.SyncBatchNorm", "a private name"),
    ("${oc.select:x}", "not a plain dotted name"),
    (["pathlib.Path"], "not a plain dotted name"),
])
def test_what_is_refused_and_why(monkeypatch, target, reason):
    monkeypatch.delenv(trust.ENV, raising=False)
    message = refusal({**OWN_RUN, "datamodule": {"_target_": target}})
    assert f"datamodule._target_: {target}  <- refused: {reason}" in message
    assert "model.net._target_: dlops.models.nets.MLP\n" in message  # every target is listed


@pytest.mark.parametrize("value", ["${oc.env:HOME}", "${oc.create:{_target_: os.system}}",
                                   "a ${oc.decode:'[1]'}", "${dlops.unique_dir:/tmp/x}"])
def test_resolvers_that_make_config_or_read_the_environment_are_refused(value):
    message = refusal({**OWN_RUN, "datamodule": {"_target_": "dlops.data.mnist.MNISTDataModule", "x": value}})
    assert "datamodule.x: ${" in message and "a resolver that could make config" in message


def test_your_packages_are_trusted_by_name_functions_too(tmp_path, monkeypatch):
    (tmp_path / "unitlab.py").write_text("import os\n\ndef make(): return 1\n\nclass Net: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = {"a": {"_target_": "unitlab.make"}, "b": {"_target_": "unitlab.Net"}}
    monkeypatch.setenv(trust.ENV, "unitlab")
    trust.check(config, "RUN")
    assert "defined in posix" in refusal({"c": {"_target_": "unitlab.os.system"}})  # not theirs
    trust.allow_all(True)
    try:
        trust.check({"c": {"_target_": "os.system"}}, "RUN")  # --trust: the person's call
    finally:
        trust.allow_all(False)


def test_a_run_config_is_read_as_data(tmp_path: Path):
    (tmp_path / ".hydra").mkdir()
    config = tmp_path / ".hydra" / "config.yaml"
    config.write_text("a: &x [1, 2]\nb: *x\n")
    with pytest.raises(ConfigError, match="holds YAML aliases"):
        read_run_yaml(tmp_path, Path(".hydra/config.yaml"))
    config.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="is not a YAML mapping"):
        read_run_yaml(tmp_path, Path(".hydra/config.yaml"))
    config.unlink()
    config.symlink_to("/etc/hostname")
    with pytest.raises(ConfigError, match="points outside the run dir"):
        read_run_yaml(tmp_path, Path(".hydra/config.yaml"))
