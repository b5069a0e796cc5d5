"""Sweeps that survive: failure isolation, the sweep summary, launchers, Optuna, DDP."""

import csv
import json
import sqlite3
import statistics
from pathlib import Path

import pytest
from helpers import run_dirs, summary, sweep_rows, train
from omegaconf import OmegaConf

from dlops.cli import main


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


# --- slow: real sweeps through train.py


def test_failing_job_is_recorded_the_sweep_goes_on_and_its_resume_fails_it_again(tmp_path):
    result = train(tmp_path, "-m", "model.optimizer.lr=0.001,-1,0.01", "debug=fast", check=False)
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

    again = train(tmp_path, "-m", f"resume={sweep}", check=False)
    # jobs 0 and 2 are done and not counted; job 1 was tried again and still cannot run
    assert again.returncode == 1, again.stdout[-2000:] + again.stderr[-2000:]
    assert "1 of 1 jobs did not complete: job 1" in again.stderr and "lr must be" in again.stderr


@pytest.mark.slow
def test_diverging_run_stops_with_status_diverged(tmp_path):
    result = train(tmp_path, "model.optimizer.lr=1e30", "debug=fast", "trainer.max_epochs=3", check=False)
    assert result.returncode == 1
    info = summary(run_dirs(tmp_path)[0])
    assert info["status"] == "diverged" and info["epochs_completed"] < 3
    assert "the run diverged. Lower model.optimizer.lr" in info["error"]["message"]


@pytest.mark.slow
def test_submitit_local_keeps_the_run_dir_contract(tmp_path):
    train(tmp_path, "-m", "hydra/launcher=submitit_local", "seed=1,2", "debug=fast")
    sweep = one_sweep_dir(tmp_path)
    jobs = run_dirs(tmp_path, "multirun")
    assert [d.name for d in jobs] == ["0", "1"] and {d.parent for d in jobs} == {sweep}
    for run_dir in jobs:
        assert_complete(run_dir)
    assert (sweep / ".submitit").is_dir() and [r["status"] for r in sweep_rows(sweep)] == ["completed"] * 2


@pytest.mark.slow
def test_optuna_study_continues_in_the_same_sweep_dir(tmp_path):
    study = ["-m", "hparams_search=mnist_optuna", "hydra.sweep.dir=multirun/study", "debug=fast"]
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
             "model.net.hidden_sizes=[64]", "datamodule.batch_size=128", "debug=fast", "trainer.max_epochs=3",
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
def test_parallel_optuna_trials_run_at_the_same_time_and_report_to_one_study(tmp_path):
    # the joblib launcher as under any sweep (also tests/e2e/test_mlflow.py), here with Optuna
    train(tmp_path, "-m", "hparams_search=mnist_optuna", "hydra.sweep.dir=study", "hydra/launcher=joblib",
          "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=4", "debug=fast",
          "trainer.max_epochs=2", "hydra.sweeper.pruner.n_startup_trials=4")
    jobs = run_dirs(tmp_path, "study")
    assert [d.name for d in jobs] == ["0", "1", "2", "3"] and len({summary(d)["pid"] for d in jobs}) == 2
    for run_dir in jobs:
        assert_complete(run_dir)
    spans = [(s["started_at_unix"], s["started_at_unix"] + s["duration_s"]) for s in map(summary, jobs)]
    overlapping = [(a, b) for a in spans for b in spans if a < b and b[0] < a[1]]
    assert overlapping, f"no two trials ran at the same time: {spans}"
    assert len(sweep_rows(tmp_path / "study")) == 4
    with sqlite3.connect(tmp_path / "study/optuna.db") as db:
        assert db.execute("SELECT state FROM trials").fetchall() == [("COMPLETE",)] * 4
        assert db.execute("SELECT COUNT(*) FROM trial_intermediate_values").fetchone() == (8,)


@pytest.mark.slow
def test_three_fold_sweep_reports_n_3_with_mean_and_std(tmp_path, capsys):
    train(tmp_path, "-m", "hydra.sweep.dir=cv", "datamodule.folds=3", "datamodule.fold=0,1,2", "debug=fast")
    best = [summary(tmp_path / f"cv/{n}")["best_metric"] for n in range(3)]
    assert main(["report", str(tmp_path / "cv"), "--group-by", "datamodule.folds", "--format", "json"]) == 0
    [group] = json.loads(capsys.readouterr().out)["groups"]
    assert group["datamodule.folds"] == "3" and group["n"] == 3 and group["statuses"] == "3 completed"
    assert group["best_val_loss_mean"] == pytest.approx(statistics.fmean(best))
    assert group["best_val_loss_std"] == pytest.approx(statistics.stdev(best))
    assert main(["report", str(tmp_path / "cv"), "--group-by", "datamodule.folds"]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│")]
    assert " 3 " in row and " ± " in row


# a single DDP run (outside a sweep) is tested with a model of the user's own: tests/e2e/test_byo.py
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
def test_ddp_cpu_inside_a_sweep(tmp_path):
    train(tmp_path, "-m", "trainer=ddp_cpu", "seed=1,2", "debug=fast", "trainer.max_epochs=2")
    sweep = one_sweep_dir(tmp_path)
    jobs = run_dirs(tmp_path, "multirun")
    assert [d.name for d in jobs] == ["0", "1"] and {d.parent for d in jobs} == {sweep}
    for run_dir in jobs:
        assert_one_ddp_run(run_dir, epochs=2)


# --- Optuna studies: one metric, one direction, one message per storage problem

STUDY = ["-m", "hparams_search=mnist_optuna", "hydra.sweep.dir=study", "debug=fast"]


def refused(cwd: Path, *overrides: str) -> str:
    """Run a sweep expecting one message before any trial; return its output."""
    result = train(cwd, *overrides, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    return output


def trials(sweep: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(sweep / "optuna.db") as db:
        return db.execute("SELECT number, state FROM trials ORDER BY number").fetchall()


@pytest.mark.slow
def test_continuing_a_study_with_another_monitor_or_direction_is_refused(tmp_path):
    train(tmp_path, *STUDY, "hydra.sweeper.n_trials=1")
    for change, said in ((["monitor=val_acc", "mode=max"], "this sweep would maximize val_acc"),
                         (["mode=max"], "this sweep would maximize val_loss")):
        output = refused(tmp_path, *STUDY, "hydra.sweeper.n_trials=1", *change)
        assert output.count("the study mnist_optuna in") == 1 and "to minimize val_loss" in output
        assert said in output and "another hydra.sweep.dir" in output
    assert trials(tmp_path / "study") == [(0, "COMPLETE")] and not (tmp_path / "study" / "1").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["unwritable", "unparseable", "corrupt", "no trials"])
def test_a_storage_optuna_cannot_use_or_no_trials_is_one_message(tmp_path, case):
    study = tmp_path / "study"
    if case == "corrupt":
        study.mkdir()
        (study / "optuna.db").write_text("notes, not a database\n")
    given = {"unwritable": ["hydra.sweeper.storage=sqlite:////proc/dlops/optuna.db"],
             "unparseable": ["hydra.sweeper.storage=not-a-url"], "corrupt": [],
             "no trials": ["hydra.sweeper.n_trials=-1"]}[case]
    said = {"unwritable": "cannot use the Optuna storage sqlite:////proc/dlops/optuna.db: ",
            "unparseable": "cannot use the Optuna storage not-a-url: ",
            "corrupt": f"cannot use the Optuna storage sqlite:///{study}/optuna.db: file is not a database",
            "no trials": "hydra.sweeper.n_trials=-1: a sweep runs at least one trial"}[case]
    output = refused(tmp_path, *STUDY, *given)
    assert output.count(said) == 1, output[-3000:]
    assert not (study / "0").exists()
    if case == "corrupt":
        assert (study / "optuna.db").read_text() == "notes, not a database\n"


@pytest.mark.slow
def test_sweeps_creating_one_new_study_at_once_all_get_it(tmp_path):
    """Four processes open one new study in one new SQLite file at the same moment (Optuna makes
    its tables on first use, and two makers collided: IntegrityError)."""
    import subprocess
    import sys
    import time

    from helpers import clean_env

    code = ("import sys, time; from hydra_plugins.dlops_optuna_sweeper.sweeper import open_study\n"
            "start = float(sys.argv[1])\n"
            "while time.time() < start: time.sleep(0.001)\n"
            f"study = open_study('sqlite:///{tmp_path}/optuna.db', 'shared', 'minimize', 'val_loss', None)\n"
            "print('opened', study.study_name, study.direction.name)\n")
    start = time.time() + 8  # after every process has imported optuna
    processes = [subprocess.Popen([sys.executable, "-c", code, str(start)], env=clean_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(4)]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    assert [o.strip().splitlines()[-1] for o in outputs] == ["opened shared MINIMIZE"] * 4
