"""dlops' SLURM launcher without a cluster: what `submitit_slurm` composes to, the bad input of a
machine without SLURM, the record of a job that SLURM ended, and the `.hydra` race of DDP ranks.
(tests/test_slurm.py runs the real thing.)"""

import json

import pytest
from helpers import clean_env, train, write_run
from omegaconf import OmegaConf

from dlops.lifecycle.resolvers import hydra_subdir
from dlops.lifecycle.resume import nothing_to_train
from dlops.lifecycle.slurm import end_previous_attempt, record_lost_job, resume_override


def test_submitit_slurm_is_dlops_launcher_with_its_defaults(tmp_path):
    result = train(tmp_path, "hydra/launcher=submitit_slurm", "--cfg", "hydra", "--package",
                   "hydra.launcher")
    assert "_target_: hydra_plugins.dlops_slurm_launcher.launcher.DlopsSlurmLauncher" in result.stdout
    assert "max_num_timeout: 3" in result.stdout and "export SLURM_KILL_BAD_EXIT=1" in result.stdout


def test_slurm_sweep_without_sbatch_says_where_to_run_it(tmp_path):
    env = clean_env(PATH=str(tmp_path))  # no sbatch on it
    result = train(tmp_path, "-m", "hydra/launcher=submitit_slurm", "seed=1", env=env, check=False)
    assert result.returncode == 1
    assert "sbatch, which is not on PATH here" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("variable", ["RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"])
def test_ranks_other_than_0_never_write_hydra_files(tmp_path, monkeypatch, variable):
    assert hydra_subdir(str(tmp_path)) == ".hydra"
    monkeypatch.setenv(variable, "1")
    assert hydra_subdir(str(tmp_path)) is None


def test_a_job_slurm_ended_is_recorded_and_one_that_recorded_its_end_keeps_it(tmp_path):
    never = record_lost_job(tmp_path / "3", ["seed=3"], "7_3", "CANCELLED by 0")
    assert never["status"] == "interrupted" and "never started" in never["error"]["message"]
    assert (tmp_path / "3" / ".hydra" / "overrides.yaml").read_text() == "- seed=3\n"
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "summary.json").write_text(json.dumps({"status": "running", "epochs_completed": 2}))
    killed = record_lost_job(tmp_path / "4", ["seed=4"], "7_4", "OUT_OF_MEMORY")
    assert killed["status"] == "failed" and killed["epochs_completed"] == 2
    assert killed["error"]["slurm_state"] == "OUT_OF_MEMORY"
    (tmp_path / "5").mkdir()
    (tmp_path / "5" / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    assert record_lost_job(tmp_path / "5", [], "7_5", "CANCELLED by 0") == {"status": "interrupted"}


def test_a_requeued_job_resumes_its_run(monkeypatch):
    assert resume_override(["seed=1"], "/sweep") == ["seed=1"]
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resume_override(["seed=1"], "/sweep") == ["seed=1", "resume=/sweep"]
    assert resume_override(["resume=/x"], "/sweep") == ["resume=/x"]


def test_a_requeued_job_ends_its_killed_previous_attempt_so_that_it_resumes(tmp_path, monkeypatch):
    (tmp_path / "summary.json").write_text(json.dumps({"status": "running", "host": "another-node",
                                                       "pid": 1, "overrides": ["seed=1"]}))
    end_previous_attempt(tmp_path)  # a first attempt: nothing to end
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "running"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    end_previous_attempt(tmp_path)
    info = json.loads((tmp_path / "summary.json").read_text())
    assert info["status"] == "interrupted" and info["error"]["slurm_state"] == "REQUEUED"


def test_ranks_started_beside_rank_0_know_when_it_trains_nothing(tmp_path):
    run = write_run(tmp_path / "run", ["seed=1"], [0.5, 0.4, 0.3])  # completed, max_epochs 3
    same = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert nothing_to_train(same, run)
    longer = OmegaConf.merge(same, {"trainer": {"max_epochs": 5}})
    assert not nothing_to_train(longer, run)
    write_run(tmp_path / "diverged", ["seed=2"], [0.5], status="diverged")
    assert nothing_to_train(same, tmp_path / "diverged")
    write_run(tmp_path / "stopped", ["seed=3"], [0.5], status="interrupted")
    assert not nothing_to_train(same, tmp_path / "stopped")
