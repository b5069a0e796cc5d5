"""Files and messages at the edges: non-finite metrics, a full or read-only disk, sweep
summaries that are text, and the bad inputs of image folders, `make-dataset` and config groups."""

import shutil
import subprocess

import pytest
from helpers import clean_env, fast, strict, train

# ---------------------------------------------------------------- a real full or read-only disk


@pytest.mark.slow
def test_a_real_full_disk_names_the_file(tmp_path, tmpfs):
    run_dir = tmpfs("700k") / "run"  # room for a run's start, not for its first checkpoints
    result = train(tmp_path, f"hydra.run.dir={run_dir}", *fast(), check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    message = f"no space left on the device while writing {run_dir}/checkpoints/"
    assert output.count(message) == 1
    written = strict((run_dir / "summary.json").read_text())
    assert written["status"] == "failed" and message in written["error"]["message"]


@pytest.mark.slow
def test_resume_of_a_read_only_run_dir_gets_one_message(tmp_path, tmpfs):
    run_dir = tmp_path / "outputs" / "run"
    train(tmp_path, f"hydra.run.dir={run_dir}", *fast(1), "test=false",
          "callbacks=none")
    disk = tmpfs("16m")
    shutil.copytree(run_dir, disk / "run", ignore=shutil.ignore_patterns(".dlops.lock"))
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    result = train(tmp_path, f"resume={disk / 'run'}", "trainer.max_epochs=2", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-2000:]
    assert output.count(f"cannot write into {disk / 'run'}: Read-only file system") == 1


# ---------------------------------------------------------------- sweeps

@pytest.mark.slow
def test_a_sweep_whose_jobs_fail_exits_1_whatever_its_overrides_and_summary(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "summary.csv").mkdir(parents=True)  # the summary cannot be written
    result = train(tmp_path, "-m", f"hydra.sweep.dir={sweep}", "model.optimizer.lr=-1,-2",
                   "tags=[/x]", "callbacks=[default,evaluation]", check=False,
                   env=clean_env(COLUMNS="300"))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "2 of 2 jobs did not complete" in output and "MarkupError" not in output
    assert "could not write the sweep summary" in output
    assert "callbacks=[default,evaluation]" in output and "tags=[/x]" in output  # text, not markup


# ---------------------------------------------------------------- bad input

@pytest.mark.slow
def test_an_all_digit_experiment_name_lists_the_options(tmp_path):
    result = train(tmp_path, "experiment=999", check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert "Could not find 'experiment/999'" in output and "006" in output


