"""Sweeps that survive: failure isolation, the sweep summary, launchers, Optuna, DDP."""

from importlib.metadata import requires, version
from pathlib import Path

import pytest
from helpers import ROOT, sweep_rows, write_run
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from dlops.lifecycle.argv import config_flags, swept_keys
from dlops.lifecycle.ddp import RANK_VARIABLES, is_rank_zero
from dlops.lifecycle.optuna_trial import ENV, TrialRef, current_trial
from dlops.lifecycle.resolvers import register_resolvers
from dlops.lifecycle.sweep import SweepSummary, write_sweep_summary
from dlops.rundir.summary import write as write_summary
from hydra_plugins.dlops_optuna_sweeper import search_space as space_parser

# one batch per stage: the whole pipeline (fit, checkpoints, test, summary) in seconds


def fake_job(sweep: Path, name: str, **fields) -> Path:
    """A job dir as Hydra and the pipeline leave it; no summary.json when `fields` is empty."""
    (sweep / name / ".hydra").mkdir(parents=True)
    if fields:
        write_summary(sweep / name, {"monitor": "val_loss", "mode": "min", "duration_s": 1.5,
                                     "overrides": [f"seed={name}"], **fields})
    return sweep / name


# --- fast: the summary and the rank logic on made-up job dirs


def test_sweep_summary_lists_every_job_and_the_best(tmp_path):
    fake_job(tmp_path, "0", status="completed", best_metric=0.3, error=None)
    fake_job(tmp_path, "1", status="failed", best_metric=None,
             error={"type": "ConfigError", "message": "the config has 1 problem(s):\n  - bad lr"})
    fake_job(tmp_path, "2", status="completed", best_metric=0.2, error=None)
    fake_job(tmp_path, "3")  # killed before it wrote a summary
    fake_job(tmp_path, "10", status="diverged", best_metric=None, error={"message": "loss is nan"})
    (tmp_path / ".submitit").mkdir()  # not a job
    write_sweep_summary(tmp_path)
    rows = sweep_rows(tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [
        ("0", "completed"), ("1", "failed"), ("2", "completed"), ("3", "missing"), ("10", "diverged")]
    assert rows[1]["error"] == "the config has 1 problem(s): - bad lr" and rows[2]["best"] == "0.2"
    assert rows[0]["run_dir"] == str((tmp_path / "0").resolve()) and rows[0]["overrides"] == "seed=0"
    markdown = (tmp_path / "summary.md").read_text().splitlines()
    assert len(markdown) == 2 + 5 and "| 1 | failed | seed=1 | val_loss |" in markdown[3]
    best = OmegaConf.load(tmp_path / "best.json")
    assert (best.job, best.best, list(best.overrides)) == (2, 0.2, ["seed=2"])


def test_best_job_follows_mode(tmp_path):
    for name, value in (("0", 0.9), ("1", 0.95)):
        fake_job(tmp_path, name, status="completed", best_metric=value, mode="max", monitor="val_acc")
    write_sweep_summary(tmp_path)
    assert OmegaConf.load(tmp_path / "best.json").job == 1


def test_callback_exits_1_naming_the_failed_jobs_of_this_multirun_only(tmp_path, capsys):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    fake_job(tmp_path, "0", status="failed", error={"message": "an earlier trial"})
    callback = SweepSummary()
    callback.on_multirun_start(config)  # e.g. a continued Optuna study: job 0 is from before
    fake_job(tmp_path, "1", status="completed", best_metric=0.5, error=None)
    callback.on_multirun_end(config)  # no exit: every job of this multirun completed
    fake_job(tmp_path, "2", status="failed", error={"message": "boom"})
    with pytest.raises(SystemExit) as exit_info:
        callback.on_multirun_end(config)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "1 of 2 jobs did not complete: job 2 (seed=2): failed: boom" in err and "job 0" not in err


def test_rank_zero_comes_from_the_launchers_variables(monkeypatch):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert is_rank_zero()
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert not is_rank_zero()


def test_ranks_started_by_lightning_keep_only_the_config_choice():
    argv = ["-m", "seed=1,2", "-cn", "other", "--config-dir=/x", "hydra/launcher=joblib"]
    assert config_flags(argv) == ["-cn", "other", "--config-dir=/x"]


def test_swept_keys_are_read_with_hydras_own_grammar():
    task = ["seed=1,2", "+tags=[a,b]", "name='x,y'", "lr=interval(0.1,1)", "model=cnn", "b=range(3)"]
    assert swept_keys(task) == {"seed", "lr", "b"}


def test_readme_slurm_command_composes():
    """README's multi-node DDP command for SLURM: every key exists (no cluster here to run it)."""
    register_resolvers()
    overrides = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                 "hydra.launcher.timeout_min=240", "hydra.launcher.nodes=2",
                 "hydra.launcher.tasks_per_node=4", "hydra.launcher.gpus_per_node=4",
                 "hydra.launcher.cpus_per_task=8", "hydra.launcher.mem_gb=64",
                 "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    with initialize_config_dir(config_dir=str(ROOT / "src" / "dlops" / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.nodes == 2
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", 4, 2)
    assert cfg.hydra.callbacks.sweep_summary._target_ == "dlops.lifecycle.sweep.SweepSummary"


def test_search_space_reads_hydra_sweep_syntax_and_a_plain_value_fixes_a_key():
    space, fixed = space_parser.search_space([
        "lr=tag(log, interval(0.0001, 0.03))", "sizes=choice([64], [128,64])", "batch=choice(32, 64)",
        "n=int(interval(1, 8))", "k=range(1, 7, 2)", "drop=interval(0, 0.5)", "batch=64", "model=cnn"])
    assert space == {"lr": FloatDistribution(0.0001, 0.03, log=True),
                     "sizes": CategoricalDistribution(["[64]", "[128,64]"]),
                     "n": IntDistribution(1, 8), "k": IntDistribution(1, 5, step=2),
                     "drop": FloatDistribution(0.0, 0.5)}
    assert fixed == ["batch=64", "model=cnn"]  # the later plain value wins over the choice
    assert space_parser.trial_overrides({"sizes": "[128,64]", "flag": True, "x": None}, fixed) == [
        "sizes=[128,64]", "flag=true", "x=null", "batch=64", "model=cnn"]
    # looked up when raised: Hydra's plugin scan re-executes the module, making a new class
    with pytest.raises(space_parser.SearchSpaceError, match=r"model=glob\(\*\) cannot be searched"):
        space_parser.search_space(["model=glob(*)"])


def test_trial_reaches_its_job_through_one_quoted_env_override(monkeypatch):
    ref = TrialRef("sqlite:////tmp/it's here/optuna.db", "study", 3, {"_target_": "optuna.pruners.NopPruner"})
    [override] = OverridesParser.create().parse_overrides([ref.env_override()])
    assert override.key_or_group == f"hydra.job.env_set.{ENV}"
    monkeypatch.setenv(ENV, override.value())
    assert current_trial() == ref
    monkeypatch.delenv(ENV)
    assert current_trial() is None


def test_installed_optuna_is_current_and_sqlalchemy_is_2_beside_mlflow():
    major = {name: int(version(name).split(".")[0]) for name in ("optuna", "sqlalchemy", "mlflow")}
    assert major["optuna"] >= 4 and major["sqlalchemy"] >= 2 and major["mlflow"] >= 2, major
    assert not any(name.startswith("hydra-optuna-sweeper") for name in requires("dlops-lightning"))




def test_the_study_direction_follows_the_runs_mode_rule():
    from hydra_plugins.dlops_optuna_sweeper.sweeper import StudyError, study_direction

    assert study_direction("auto", "val_acc") == "maximize"
    assert study_direction("auto", "val/loss") == "minimize"
    assert study_direction("min", "val_acc") == "minimize"  # an explicit mode wins
    assert study_direction("maximize", "val_loss") == "maximize"
    with pytest.raises(StudyError, match="mode=auto cannot tell whether a larger or a smaller val_x"):
        study_direction("auto", "val_x")
    with pytest.raises(StudyError, match="hydra.sweeper.direction=up"):
        study_direction("up", "val_loss")


def test_a_completed_job_is_never_called_refused(tmp_path):
    from dlops.rundir import refused

    sweep = tmp_path / "sweep"
    write_run(sweep / "0", ["seed=1"], [0.5, 0.4])
    write_run(sweep / "1", ["seed=2"], [0.5], status="interrupted")
    for job in ("0", "1"):  # a second sweep into this dir found both jobs' dirs in use
        refused.note(sweep, sweep / job, f"{sweep / job} is in use by another process (pid 1 on here)")
    assert [r["status"] for r in write_sweep_summary(sweep)] == ["completed", "refused"]
