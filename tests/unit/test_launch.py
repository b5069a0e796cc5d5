"""The training entry as a dependency uses it: the user's config folder over dlops' packaged one,
every Trainer argument without `+`, checks derived from signatures, extras that say their install
line, dlops' own help page and shell completion."""

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TRAIN, clean_env
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dlops import configs, extras
from dlops.cli import main as dlops
from dlops.lifecycle.preflight import needs
from dlops.lifecycle.resolvers import register_resolvers
from dlops.lifecycle.resume import _resume_argv
from dlops.lifecycle.trainer_args import set_by_every_option, without_plus
from dlops.signatures import imported_packages, init_parameters, trainer_parameters
from dlops.validate import config_problems

register_resolvers()
configs.search_packaged()


def compose_in(folder: Path | None, *overrides: str):
    with initialize_config_dir(str(folder or configs.PACKAGED), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


@pytest.fixture
def user_conf(tmp_path) -> Path:
    """A user's config folder: their own option, and one named like dlops' `model/mlp`."""
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "mlp.yaml").write_text("# theirs\n_target_: mine.Net\nwidth: 7\n")
    (conf / "model" / "linear.yaml").write_text("# one layer\n_target_: mine.Linear\n")
    return conf


def test_the_users_option_wins_over_dlops_option_of_the_same_name(user_conf):
    cfg = compose_in(user_conf)
    assert cfg.model._target_ == "mine.Net"
    assert cfg.datamodule._target_.startswith("dlops.")  # train.yaml is dlops'
    assert compose_in(user_conf, "model=cnn").model.net._target_ == "dlops.models.nets.CNN"
    sources = [(s.provider, s.path) for s in cfg.hydra.runtime.config_sources if s.schema == "file"]
    assert sources == [("main", str(user_conf)), ("dlops", str(configs.PACKAGED))]
    assert [s.provider for s in compose_in(None).hydra.runtime.config_sources].count("dlops") == 0


def test_the_config_folder_comes_from_the_flag_else_from_a_conf_folder_here(tmp_path, user_conf):
    args, given = configs.split_dir_flags(["-m", "--config-dir", "conf", "seed=1", "-cd=x"])
    assert (args, given) == (["-m", "seed=1"], "x")
    assert configs.user_dir("conf", tmp_path) == user_conf
    assert configs.user_dir(None, tmp_path) == user_conf  # ./conf, found without the flag
    assert configs.user_dir(None, user_conf) is None
    with pytest.raises(NotADirectoryError, match="nowhere"):
        configs.user_dir("nowhere", tmp_path)
    recorded = [{"provider": "main", "schema": "file", "path": str(configs.PACKAGED)}]
    assert configs.recorded_primary(recorded) is None  # dlops' own: nothing of the user's to add
    assert configs.recorded_primary([*recorded, {"provider": "command-line", "schema": "file",
                                                 "path": str(user_conf)}]) == user_conf  # before the move


def test_resuming_a_sweep_composes_again_from_the_users_folder(tmp_path, monkeypatch, user_conf):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "multirun" / "s"
    sweep.mkdir(parents=True)
    sources = [{"provider": "main", "schema": "file", "path": str(user_conf)}]
    hydra = {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"},
             "overrides": {"task": ["model=linear", "seed=1,2"], "hydra": ["hydra.mode=MULTIRUN"]},
             "runtime": {"cwd": str(tmp_path), "config_sources": sources}}
    OmegaConf.save({"hydra": hydra}, sweep / "multirun.yaml")
    argv = _resume_argv(["dlops", f"--config-path={configs.PACKAGED}", f"resume={sweep}"])
    # the folder flag before the overrides (Hydra's parser takes no flag after them), the given one replaced
    assert argv[:5] == ["dlops", "-m", f"--config-path={user_conf}", "model=linear", "seed=1,2"]
    assert f"--config-path={configs.PACKAGED}" not in argv


def test_every_trainer_argument_is_read_from_the_installed_lightning_without_importing_it():
    for package in ("lightning.pytorch", "pytorch_lightning"):
        module = __import__(package, fromlist=["Trainer"])
        expected = [n for n in inspect.signature(module.Trainer.__init__).parameters if n != "self"]
        assert list(init_parameters(f"{package}.trainer.trainer.Trainer")) == expected
    assert "limit_train_batches" in trainer_parameters()
    for target in ("dlops.data.mnist.MNISTDataModule", "dlops.models.nets.MLP",
                   "dlops.models.classifier.Classifier"):
        module, _, name = target.rpartition(".")
        cls = getattr(__import__(module, fromlist=[name]), name)
        expected = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
        assert list(init_parameters(target)) == expected
    assert "mlflow" in imported_packages("dlops.tracking.mlflow_logger")  # a lazy import counts


def test_trainer_arguments_without_plus_and_a_misspelt_one_gets_the_name_meant():
    folders = [configs.PACKAGED]
    assert {"max_epochs", "accelerator", "precision"} <= set_by_every_option(folders)
    args = ["trainer.max_epochs=3", "trainer.limit_train_batches=5", "-m", "trainer.accelerator=tpu",
            "trainer.mine=1"]
    assert without_plus(args, folders) == ["trainer.max_epochs=3", "++trainer.limit_train_batches=5", "-m",
                                           "trainer.accelerator=tpu", "trainer.mine=1"]
    with pytest.raises(ValueError, match="did you mean trainer.limit_train_batches"):
        without_plus(["trainer.limit_train_batchs=5"], folders)
    cfg = compose_in(None, "++trainer.limit_train_batches=5", "++trainer.gradient_clip_val=0.5")
    assert (cfg.trainer.limit_train_batches, cfg.trainer.gradient_clip_val) == (5, 0.5)


def test_what_lightning_accepts_passes_dlops_checks_and_types_come_from_signatures():
    accepted = compose_in(None, "trainer.accelerator=tpu", "trainer.precision=transformer-engine",
                          "trainer.devices=[0,1]", "trainer.max_epochs=null",
                          "++trainer.val_check_interval=0.5")
    assert config_problems(accepted) == []
    wrong = compose_in(None, "trainer.max_epochs=abc", "++trainer.limit_val_batches=all",
                       "datamodule.source=web", "datamodule.download=3")
    assert config_problems(wrong) == [
        "trainer.max_epochs must be an integer or null, got 'abc' (text)",
        "trainer.limit_val_batches must be an integer, a number or null, got 'all' (text)",
        "datamodule.source must be one of bundled, torchvision, got 'web' (text)",
        "datamodule.download must be true or false, got 3"]


def test_features_that_need_an_extra_are_found_in_the_composed_config():
    assert needs(compose_in(None)) == {}
    assert set(needs(compose_in(None, "logger=many")).values()) == {"wandb", "mlflow"}
    assert set(needs(compose_in(None, "hparams_search=mnist_optuna")).values()) == {"optuna"}
    found = needs(compose_in(None, "experiment=diabetes", "export=onnx"))
    assert set(found.values()) == {"examples", "export"} and "export=onnx" in found
    assert extras.message({"logger.x": "mlflow"}) is None  # installed here
    extras.EXTRAS["absent"] = ("no_such_module_here",)
    try:
        text = extras.message({"logger.x": "absent"})
    finally:
        del extras.EXTRAS["absent"]
    assert text == ("logger.x needs no_such_module_here, not installed here: dlops installs it with its "
                    "absent extra: pip install 'dlops-lightning[absent]'")


def test_help_is_dlops_own_page_and_imports_neither_hydra_nor_torch(capsys, user_conf, monkeypatch):
    monkeypatch.chdir(user_conf.parent)  # ./conf is found
    assert dlops(["train", "--help"]) == 0
    page = capsys.readouterr().out
    assert "powered by Hydra" not in page and "\n  local" not in page and "example.yaml" not in page
    for line in ("  monitor", "  mode", "  resume", "  test", "  seed", "  name", "  tags", "  export",
                 "linear+", "mlp*+", "Examples:", "dlops train -m"):
        assert line in page, line
    code = ("import sys; sys.argv = ['dlops', 'train', '--help']; from dlops.cli import main; main(); "
            "print('HEAVY', [m for m in ('torch', 'lightning', 'hydra') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=user_conf.parent, env=clean_env(),
                         capture_output=True, text=True, timeout=120).stdout
    assert "HEAVY []" in out and "mlp*+" in out


def test_cfg_job_resolve_prints_the_data_facts_as_placeholders(tmp_path):
    result = subprocess.run([sys.executable, str(TRAIN), "--cfg", "job", "--resolve"], cwd=tmp_path,
                            env=clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "num_classes: <num_classes from the datamodule>" in result.stdout and "${" not in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_bash_completion_completes_commands_flags_and_hydras_config(tmp_path, user_conf):
    script = subprocess.run([sys.executable, "-m", "dlops", "completion", "bash"], env=clean_env(),
                            capture_output=True, text=True, timeout=60).stdout
    (tmp_path / "dlops.bash").write_text(script)
    probe = """source dlops.bash
try() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
        COMPREPLY=(); _dlops_complete; echo "${COMPREPLY[*]}"; }
try dlops rep; try dlops report --gr; try dlops train model=; try dlops train --config-d
"""
    env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    lines = subprocess.run(["bash", "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300).stdout.splitlines()
    assert lines[:2] == ["report", "--group-by"] and lines[3] == "--config-dir"
    assert set(lines[2].split()) == {"model=cnn", "model=diabetes_mlp", "model=mlp", "model=linear"}
