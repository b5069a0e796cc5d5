"""The config tree composes: every option of every group, the reference experiments, light start-up."""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, TRAIN, clean_env
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dlops.lifecycle.resolvers import register_resolvers, unique_dir
from dlops.validate import config_problems

CONF = ROOT / "src" / "dlops" / "conf"
GROUPS = ["datamodule", "model", "trainer", "logger", "callbacks", "debug", "experiment", "hparams_search"]

register_resolvers()


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option):
    overrides = [f"{group}={option}"]
    if group == "datamodule" and option == "image_folder":
        overrides.append("datamodule.root=/tmp")
    cfg = compose_train(*overrides)
    OmegaConf.to_container(cfg.datamodule, resolve=False)  # no missing structure
    assert cfg.model._target_ and cfg.datamodule._target_


def test_every_option_file_says_what_it_is_for():
    for path in CONF.rglob("*.yaml"):
        text = path.read_text()
        assert text.lstrip().startswith("#"), f"{path} has no comment saying what it is for"


def test_default_config():
    cfg = compose_train()
    assert cfg.datamodule.source == "bundled" and cfg.datamodule.positive_digit == 3
    assert cfg.seed == 42 and cfg.test is True and cfg.monitor == "val_loss"
    assert list(cfg.logger) == ["csv"]
    assert cfg.callbacks.model_checkpoint.save_last is False  # dlops writes last.ckpt every epoch
    assert cfg.callbacks.model_checkpoint.filename == "{epoch}-{val_loss:.4f}"
    assert cfg.model.optimizer.fused is True  # Adam's fused kernel (bench/bench_epoch.py)
    assert config_problems(cfg) == []


def test_seed_experiments():
    e001 = compose_train("experiment=001")
    assert (e001.datamodule.batch_size, e001.trainer.max_epochs) == (64, 20)
    assert e001.model.net._target_.endswith("MLP") and list(e001.model.net.hidden_sizes) == [100]
    assert compose_train("experiment=003").name == "003"
    e006 = compose_train("experiment=006")
    assert e006.callbacks.model_checkpoint.filename == "006-{val_loss:.5f}-{epoch}"
    assert (e006.monitor, e006.mode, e006.callbacks.model_checkpoint.save_top_k) == ("val_loss", "min", 1)
    assert list(e006.callbacks.evaluation.labels) == ["no 3", "3"]
    e007 = compose_train("experiment=007")
    assert list(e007.model.net.hidden_sizes) == [200, 100]
    assert e007.logger.wandb.project == "dlops-mnist"


def test_validation_reports_every_problem_at_once():
    cfg = compose_train("datamodule.batch_size=0", "model.optimizer.lr=-1", "mode=up",
                        "datamodule.val_fraction=0.6", "datamodule.test_fraction=0.5",
                        "+trainer.enable_checkpointing=false")
    problems = "\n".join(config_problems(cfg))
    for key in ("datamodule.batch_size", "model.optimizer.lr", "mode", "below 1",
                "enable_checkpointing=false is not supported"):
        assert key in problems


def test_unique_dir_never_reuses_a_directory(tmp_path):
    base = str(tmp_path / "16-00-00")
    made = {unique_dir(base) for _ in range(3)}
    assert made == {base, base + "-2", base + "-3"}
    assert all(Path(p).is_dir() for p in made)


@pytest.mark.parametrize("flag", ["--help", "--cfg=job"])
def test_light_commands_do_not_import_torch(flag):
    code = (f"import sys; sys.argv = ['train.py', '{flag}']; sys.path.insert(0, {str(ROOT)!r}); "
            "import runpy\ntry: runpy.run_path('train.py', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'pytorch_lightning', 'lightning', 'wandb') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_env(),
                         capture_output=True, text=True, timeout=60).stdout
    assert "HEAVY []" in out, out[-2000:]


def test_help_lists_config_groups():
    out = subprocess.run([sys.executable, str(TRAIN), "--help"], env=clean_env(),
                         capture_output=True, text=True, timeout=60).stdout
    for group in ("datamodule", "model", "trainer", "logger", "callbacks", "experiment"):
        assert group in out
