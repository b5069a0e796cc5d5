"""Sweeps that survive: failure isolation, the sweep summary, launchers, Optuna, DDP."""

import csv
import json
import sqlite3
import statistics
from importlib.metadata import requires, version
from pathlib import Path

import pytest
from helpers import ROOT, run_dirs, summary, train
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from dlops.cli import main
from dlops.lifecycle.argv import config_flags, swept_keys
from dlops.lifecycle.ddp import RANK_VARIABLES, is_rank_zero
from dlops.lifecycle.optuna_trial import ENV, TrialRef, current_trial
from dlops.lifecycle.resolvers import register_resolvers
from dlops.lifecycle.sweep import SweepSummary, write_sweep_summary
from dlops.rundir.summary import write as write_summary
from hydra_plugins.dlops_optuna_sweeper import search_space as space_parser

# one batch per stage: the whole pipeline (fit, checkpoints, test, summary) in seconds
FAST = ["debug=fast"]


def fake_job(sweep: Path, name: str, **fields) -> Path:
    """A job dir as Hydra and the pipeline leave it; no summary.json when `fields` is empty."""
    (sweep / name / ".hydra").mkdir(parents=True)
    if fields:
        write_summary(sweep / name, {"monitor": "val_loss", "mode": "min", "duration_s": 1.5,
                                     "overrides": [f"seed={name}"], **fields})
    return sweep / name


def sweep_rows(sweep: Path) -> list[dict]:
    with open(sweep / "summary.csv") as file:
        return list(csv.DictReader(file))


def one_sweep_dir(cwd: Path) -> Path:
    """The only sweep dir under cwd/multirun/<date>/: `dlops.unique_dir` resolved once per sweep."""
    [day] = (cwd / "multirun").iterdir()
    [sweep] = day.iterdir()
    assert not (cwd / "outputs").exists()
    return sweep


def assert_complete(run_dir: Path) -> None:
    """The run-dir contract of a finished run."""
    info = summary(run_dir)
    assert info["status"] == "completed", info["error"]
    assert (run_dir / info["best_checkpoint"]).is_file() and (run_dir / "checkpoints/last.ckpt").is_file()
    assert (run_dir / "csv/metrics.csv").is_file() and (run_dir / "train.log").is_file()
    assert (run_dir / ".hydra/overrides.yaml").is_file() and set(info["test_metrics"]) == {
        "test_loss", "test_acc", "test_auroc"}


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
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
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
    assert not any(name.startswith("hydra-optuna-sweeper") for name in requires("dlops"))


# --- slow: real sweeps through train.py


@pytest.mark.slow
def test_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    result = train(tmp_path, "-m", "model.optimizer.lr=0.001,-1,0.01", *FAST, check=False)
    assert result.returncode == 1
    sweep = one_sweep_dir(tmp_path)
    jobs = run_dirs(tmp_path, "multirun")
    assert [d.name for d in jobs] == ["0", "1", "2"]
    assert_complete(jobs[0])
    assert_complete(jobs[2])
    failed = summary(jobs[1])
    assert failed["status"] == "failed" and failed["error"]["type"] == "ConfigError"
    assert "model.optimizer.lr must be a number > 0, got -1" in failed["error"]["message"]
    assert "dlops.errors.ConfigError" in (jobs[1] / failed["error"]["traceback"]).read_text()
    assert [r["status"] for r in sweep_rows(sweep)] == ["completed", "failed", "completed"]
    assert len((sweep / "summary.md").read_text().splitlines()) == 2 + 3
    assert "job 1 (model.optimizer.lr=-1 debug=fast): failed" in result.stderr
    assert "best val_loss" in result.stdout


@pytest.mark.slow
def test_diverging_run_stops_with_status_diverged(tmp_path):
    result = train(tmp_path, "model.optimizer.lr=1e30", *FAST, "trainer.max_epochs=3", check=False)
    assert result.returncode == 1
    info = summary(run_dirs(tmp_path)[0])
    assert info["status"] == "diverged" and info["epochs_completed"] < 3
    assert "the run diverged. Lower model.optimizer.lr" in info["error"]["message"]


@pytest.mark.slow
def test_joblib_runs_jobs_at_the_same_time(tmp_path):
    train(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2,3,4", *FAST)
    sweep = one_sweep_dir(tmp_path)
    jobs = run_dirs(tmp_path, "multirun")
    assert [d.name for d in jobs] == ["0", "1", "2", "3"] and {d.parent for d in jobs} == {sweep}
    for run_dir in jobs:
        assert_complete(run_dir)
    spans = [(s["started_at_unix"], s["started_at_unix"] + s["duration_s"]) for s in map(summary, jobs)]
    overlapping = [(a, b) for a in spans for b in spans if a < b and b[0] < a[1]]
    assert overlapping, f"no two jobs ran at the same time: {spans}"
    assert len({summary(d)["pid"] for d in jobs}) == 2  # two worker processes
    assert len(sweep_rows(sweep)) == 4


@pytest.mark.slow
def test_submitit_local_keeps_the_run_dir_contract(tmp_path):
    train(tmp_path, "-m", "hydra/launcher=submitit_local", "seed=1,2", *FAST)
    sweep = one_sweep_dir(tmp_path)
    jobs = run_dirs(tmp_path, "multirun")
    assert [d.name for d in jobs] == ["0", "1"] and {d.parent for d in jobs} == {sweep}
    for run_dir in jobs:
        assert_complete(run_dir)
    assert (sweep / ".submitit").is_dir() and [r["status"] for r in sweep_rows(sweep)] == ["completed"] * 2


@pytest.mark.slow
def test_optuna_study_continues_in_the_same_sweep_dir(tmp_path):
    study = ["-m", "hparams_search=mnist_optuna", "hydra.sweep.dir=multirun/study", *FAST]
    train(tmp_path, *study, "hydra.sweeper.n_trials=4")
    first = OmegaConf.load(tmp_path / "multirun/study/best.json")
    train(tmp_path, *study, "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=null")
    sweep = tmp_path / "multirun/study"
    with sqlite3.connect(sweep / "optuna.db") as db:
        trials = db.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
        reported = db.execute("SELECT t.number FROM trials t JOIN trial_intermediate_values v "
                              "USING (trial_id) ORDER BY t.number").fetchall()
    assert trials == [(n, "COMPLETE") for n in range(6)]
    assert reported == [(n,) for n in range(4)]  # with pruner=null, trials report nothing
    jobs = run_dirs(tmp_path, "multirun")
    assert [d.name for d in jobs] == [str(n) for n in range(6)]  # trial N runs in <sweep>/N
    assert len({tuple(summary(d)["overrides"]) for d in jobs}) == 6
    for run_dir in jobs:
        assert_complete(run_dir)
    best = OmegaConf.load(sweep / "best.json")
    assert best.best <= first.best and Path(best.run_dir).parent == sweep.resolve()
    results = OmegaConf.load(sweep / "optimization_results.yaml")  # written by Optuna's sweeper
    assert results.best_value == pytest.approx(best.best)
    assert {o.split("=")[0] for o in best.overrides} >= {"model.optimizer.lr", "model.net.hidden_sizes",
                                                        "datamodule.batch_size"}


@pytest.mark.slow
def test_failed_optuna_trial_fails_in_the_study(tmp_path):
    result = train(tmp_path, "-m", "hparams_search=mnist_optuna", "hydra.sweep.dir=study",
                   "hydra.sweeper.n_trials=1", "model.optimizer.lr=-1", check=False)
    assert result.returncode == 1 and "job 0" in result.stderr
    with sqlite3.connect(tmp_path / "study/optuna.db") as db:
        assert db.execute("SELECT state FROM trials").fetchall() == [("FAIL",)]
    assert summary(tmp_path / "study/0")["status"] == "failed"


@pytest.mark.slow
def test_unpromising_trial_is_pruned_in_its_summary_the_sweep_summary_and_the_study(tmp_path):
    # every searched key fixed, so the trials differ only in lr: trial 0 learns, trial 1 (lr 1e-7)
    # still has its initial loss after epoch 1, worse than trial 0's at that epoch
    study = ["-m", "hparams_search=mnist_optuna", "hydra.sweep.dir=study", "hydra.sweeper.n_trials=1",
             "model.net.hidden_sizes=[64]", "datamodule.batch_size=128", *FAST, "trainer.max_epochs=3",
             "trainer.limit_train_batches=5", "hydra.sweeper.pruner.n_startup_trials=1",
             "hydra.sweeper.pruner.n_warmup_steps=0"]
    train(tmp_path, *study, "model.optimizer.lr=0.01")
    result = train(tmp_path, *study, "model.optimizer.lr=1e-7")  # exit 0: pruning is not failing
    sweep = tmp_path / "study"
    assert_complete(sweep / "0")
    pruned = summary(sweep / "1")
    assert pruned["status"] == "pruned" and pruned["epochs_completed"] == 1
    assert pruned["error"]["message"].startswith("pruned by Optuna's MedianPruner after epoch 1")
    assert [r["status"] for r in sweep_rows(sweep)] == ["completed", "pruned"]
    assert float(sweep_rows(sweep)[1]["best"]) == pytest.approx(pruned["best_metric"])
    with sqlite3.connect(sweep / "optuna.db") as db:
        assert db.execute("SELECT number, state FROM trials ORDER BY number").fetchall() == [
            (0, "COMPLETE"), (1, "PRUNED")]
        reported = db.execute("SELECT t.number, v.step, v.intermediate_value FROM trials t JOIN "
                              "trial_intermediate_values v USING (trial_id) ORDER BY t.number, v.step"
                              ).fetchall()
    assert [(n, s) for n, s, _ in reported] == [(0, 0), (0, 1), (0, 2), (1, 0)]  # each epoch's val_loss
    assert reported[-1][2] == pytest.approx(pruned["last_metrics"]["val_loss"])
    assert OmegaConf.load(sweep / "best.json").job == 0 and "trial 1: PRUNED" in result.stdout


@pytest.mark.slow
def test_parallel_optuna_trials_report_to_one_study(tmp_path):
    train(tmp_path, "-m", "hparams_search=mnist_optuna", "hydra.sweep.dir=study", "hydra/launcher=joblib",
          "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=4", *FAST,
          "trainer.max_epochs=2", "hydra.sweeper.pruner.n_startup_trials=4")
    jobs = run_dirs(tmp_path, "study")
    assert [d.name for d in jobs] == ["0", "1", "2", "3"] and len({summary(d)["pid"] for d in jobs}) == 2
    with sqlite3.connect(tmp_path / "study/optuna.db") as db:
        assert db.execute("SELECT state FROM trials").fetchall() == [("COMPLETE",)] * 4
        assert db.execute("SELECT COUNT(*) FROM trial_intermediate_values").fetchone() == (8,)


@pytest.mark.slow
def test_three_fold_sweep_reports_n_3_with_mean_and_std(tmp_path, capsys):
    train(tmp_path, "-m", "hydra.sweep.dir=cv", "datamodule.folds=3", "datamodule.fold=0,1,2", *FAST)
    best = [summary(tmp_path / f"cv/{n}")["best_metric"] for n in range(3)]
    assert main(["report", str(tmp_path / "cv"), "--group-by", "datamodule.folds", "--format", "json"]) == 0
    [group] = json.loads(capsys.readouterr().out)["groups"]
    assert group["datamodule.folds"] == "3" and group["n"] == 3 and group["statuses"] == "3 completed"
    assert group["best_val_loss_mean"] == pytest.approx(statistics.fmean(best))
    assert group["best_val_loss_std"] == pytest.approx(statistics.stdev(best))
    assert main(["report", str(tmp_path / "cv"), "--group-by", "datamodule.folds"]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│")]
    assert " 3 " in row and " ± " in row


def assert_one_ddp_run(run_dir: Path, epochs: int) -> None:
    """Only rank 0 wrote: one set of logs and checkpoints, one metrics.csv without repeated rows."""
    assert_complete(run_dir)
    info = summary(run_dir)
    assert info["epochs_completed"] == epochs and info["best_metric"] is not None
    with open(run_dir / "csv/metrics.csv") as file:
        rows = [tuple(r.items()) for r in csv.DictReader(file)]
    assert len(rows) == len(set(rows)) == 2 * epochs + 1  # per epoch val + train; test
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["train.log"]
    assert len(list((run_dir / "checkpoints").glob("epoch=*.ckpt"))) == 1


@pytest.mark.slow
def test_ddp_cpu_run_has_one_run_dir(tmp_path):
    train(tmp_path, "trainer=ddp_cpu", *FAST, "trainer.max_epochs=2")
    [run_dir] = run_dirs(tmp_path)
    assert len(list((tmp_path / "outputs").glob("*/*"))) == 1
    assert_one_ddp_run(run_dir, epochs=2)


@pytest.mark.slow
def test_ddp_cpu_inside_a_sweep(tmp_path):
    train(tmp_path, "-m", "trainer=ddp_cpu", "seed=1,2", *FAST, "trainer.max_epochs=2")
    sweep = one_sweep_dir(tmp_path)
    jobs = run_dirs(tmp_path, "multirun")
    assert [d.name for d in jobs] == ["0", "1"] and {d.parent for d in jobs} == {sweep}
    for run_dir in jobs:
        assert_one_ddp_run(run_dir, epochs=2)
