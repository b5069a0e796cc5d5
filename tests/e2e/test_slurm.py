"""Sweeps, DDP, time limits and preemption on a real single-node SLURM cluster.

`bash .ci/slurm-cluster start` (as root on Debian) brings one up; CI does. Without one (`sinfo`
fails) every test here skips with the reason.
"""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, TRAIN, clean_env, fast, summary, train

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SLURM = ["hydra/launcher=submitit_slurm"]
# a job that lasts: every epoch takes at least this long (tests/pace.py), however fast the machine
PACE = ["+callbacks.pace._target_=pace.Pace", "+callbacks.pace.seconds=1.0"]
NO_PACE = ["+callbacks.pace._target_=pace.Pace", "+callbacks.pace.seconds=0"]


def _cluster_reason() -> str | None:
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no SLURM cluster: sinfo: {exc} (start one with `bash .ci/slurm-cluster start` as root)"
    if result.returncode != 0 or not result.stdout.strip():
        return (f"no SLURM cluster: sinfo: {result.stderr.strip() or 'no nodes'} "
                "(start one with `bash .ci/slurm-cluster start` as root)")
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    reason = _cluster_reason()
    if reason:
        pytest.skip(reason)


def env() -> dict[str, str]:
    """The jobs inherit it (sbatch exports the environment): our code, the pace callback, 1 thread."""
    return {**clean_env(OMP_NUM_THREADS="1"), "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}"}


def start_sweep(cwd: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TRAIN), "-m", *SLURM, *overrides], cwd=cwd, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    """Wait for a sweep (failing the test, and ending it, if it hangs); its exit code and output."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the sweep hung for {timeout}s:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return process.returncode, stdout + stderr


def sweep_dir(cwd: Path) -> Path:
    (found,) = (cwd / "multirun").glob("*/*")
    return found


def wait_until(condition, sweep: subprocess.Popen, what: str, timeout: float = 150) -> None:
    """Wait for `condition` while the sweep runs; fail with the sweep's output if it ended."""
    end = time.time() + timeout
    while not condition():
        if sweep.poll() is not None:
            pytest.fail(f"the sweep ended (exit {sweep.returncode}) before {what}:\n"
                        f"{sweep.stdout.read()[-2000:]}\n{sweep.stderr.read()[-2000:]}")
        if time.time() > end:
            pytest.fail(f"waited {timeout}s for {what}")
        time.sleep(0.5)


def rows(run_dir: Path) -> list[dict]:
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with open(path) as file:
        return list(csv.DictReader(file))


def epochs_with(run_dir: Path, metric: str) -> list[int]:
    return [int(r["epoch"]) for r in rows(run_dir) if r.get(metric)]


def sweep_rows(sweep: Path) -> dict[str, dict]:
    with open(sweep / "summary.csv") as file:
        return {r["job"]: r for r in csv.DictReader(file)}


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def slurm_job(run_dir: Path) -> str:
    """The SLURM id (ARRAY_TASK) of the job that runs `run_dir`, from the sweep's submitit logs."""
    job = run_dir.name
    (log,) = (run_dir.parent / ".submitit").glob(f"*_{job}/*_{job}_0_log.out")
    return log.parent.name


def test_scancel_of_one_job_ends_the_sweep_with_its_summary_and_resume_continues_it(tmp_path):
    epochs = 12
    sweep = start_sweep(tmp_path, *fast(f"2,{epochs},0"), *PACE)
    wait_until(lambda: list((tmp_path / "multirun").glob("*/*/1/csv/metrics.csv")), sweep, "job 1 to train")
    job_dir = sweep_dir(tmp_path) / "1"
    wait_until(lambda: len(epochs_with(job_dir, "val_loss")) >= 2, sweep, "job 1's second epoch")
    subprocess.run(["scancel", slurm_job(job_dir)], check=True)

    code, output = finish(sweep)
    assert code == 1
    table = sweep_rows(sweep_dir(tmp_path))
    assert table["0"]["status"] == "completed"
    assert table["1"]["status"] == "interrupted" and "SIGTERM" in table["1"]["error"]
    assert table["2"]["status"] == "failed" and "max_epochs" in table["2"]["error"]
    assert "2 of 3 jobs did not complete" in output and "Traceback" not in output
    assert summary(job_dir)["status"] == "interrupted" and (job_dir / "checkpoints" / "last.ckpt").is_file()

    result = train(tmp_path, "-m", f"resume={sweep_dir(tmp_path)}", env=env(), check=False, timeout=240)
    assert result.returncode == 1  # job 2's bad input is refused again
    info = summary(job_dir)
    assert info["status"] == "completed" and len(info["attempts"]) == 2  # the last one's is the top one
    assert info["attempts"][0]["status"] == "interrupted"
    assert epochs_with(job_dir, "val_loss") == list(range(epochs))  # each epoch's row exactly once
    table = sweep_rows(sweep_dir(tmp_path))
    assert [table[j]["status"] for j in "012"] == ["completed", "completed", "refused"]


def test_time_limit_and_preemption_requeue_and_resume_to_an_uninterrupted_runs_weights(tmp_path):
    # SLURM's limits are whole minutes and it checks them every 30 s, sending the signal once within
    # signal_delay_s + 30 s of the limit: 60-90 s into each attempt of 2 minutes here. 40 epochs of
    # at least 2.5 s each cannot finish within the first attempt, however fast the machine; a
    # requeued job trains at full speed, done long before its own signal (with a 1-minute limit
    # that could come at once, in any attempt).
    epochs = 40
    same = [*fast(epochs), "test=false"]
    sweep = start_sweep(tmp_path, *same, *PACE[:1], "+callbacks.pace.seconds=2.5",
                        "+callbacks.pace.first_attempt_only=true", "name=limit,preempt",
                        "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=30",
                        "hydra.launcher.max_num_timeout=6")
    wait_until(lambda: len(list((tmp_path / "multirun").glob("*/*/1/csv/metrics.csv"))) == 1,
               sweep, "job 1 to train")
    preempted = sweep_dir(tmp_path) / "1"
    wait_until(lambda: len(epochs_with(preempted, "val_loss")) >= 2, sweep, "job 1's second epoch")
    job = slurm_job(preempted)
    subprocess.run(["scontrol", "requeue", job], check=True)  # what preemption with requeue does
    reference = tmp_path / "reference"
    train(tmp_path, *same, *NO_PACE, f"hydra.run.dir={reference}", env=env())

    code, output = finish(sweep, timeout=500)
    assert code == 0, output[-3000:]
    assert [r["status"] for r in sweep_rows(sweep_dir(tmp_path)).values()] == ["completed", "completed"]
    expected = weights(reference)
    for name in ("0", "1"):
        run_dir = sweep_dir(tmp_path) / name
        info = summary(run_dir)
        assert info["status"] == "completed" and len(info["attempts"]) == 2
        assert epochs_with(run_dir, "val_loss") == list(range(epochs))  # each epoch's row exactly once
        assert epochs_with(run_dir, "train_loss") == list(range(epochs))
        mine = weights(run_dir)
        assert all(torch.equal(mine[k], expected[k]) for k in expected)
    limited = summary(sweep_dir(tmp_path) / "0")
    assert "SIGUSR2" in limited["attempts"][0].get("error", {}).get("message", "") or \
        limited["attempts"][0]["status"] == "interrupted"
    assert summary(preempted)["attempts"][0]["status"] == "interrupted"


def test_ddp_job_where_slurm_starts_both_ranks_matches_ddp_run_directly(tmp_path):
    ddp = ["trainer=ddp_cpu", "trainer.devices=2", *fast(), "seed=7"]
    sweep = start_sweep(tmp_path, *ddp, "hydra.launcher.tasks_per_node=2")
    direct = tmp_path / "direct"
    train(tmp_path, *ddp, f"hydra.run.dir={direct}", env=env())
    code, output = finish(sweep)
    assert code == 0, output[-3000:]
    (run_dir,) = [p.parent for p in sweep_dir(tmp_path).glob("*/.hydra")]  # one run dir
    info = summary(run_dir)
    assert info["status"] == "completed" and info["epochs_completed"] == 2
    assert len(list(sweep_dir(tmp_path).rglob("summary.json"))) == 1
    assert len(list(sweep_dir(tmp_path).rglob("metrics.csv"))) == 1
    assert epochs_with(run_dir, "val_loss") == [0, 1]  # written once, by global rank 0
    assert info["last_metrics"] == pytest.approx(summary(direct)["last_metrics"], rel=1e-5)
    assert info["test_metrics"] == pytest.approx(summary(direct)["test_metrics"], rel=1e-5)
