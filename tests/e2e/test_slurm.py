"""Sweeps, DDP, time limits, preemption and a lost node on a real two-node SLURM cluster.

`bash .ci/slurm-cluster start --nodes 2` (as root on Debian) brings one up, each node in its own
network namespace; CI does. Without one (`sinfo` fails, or fewer than 2 nodes) every test here
skips with the reason.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, TRAIN, clean_env, fast, report_json, summary, train

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
SLURM = ["hydra/launcher=submitit_slurm"]
CLUSTER = ROOT / ".ci" / "slurm-cluster"
# a job that lasts: every epoch takes at least this long (tests/pace.py), however fast the machine
PACE = ["+callbacks.pace._target_=pace.Pace", "+callbacks.pace.seconds=1.0"]
NO_PACE = ["+callbacks.pace._target_=pace.Pace", "+callbacks.pace.seconds=0"]
# one DDP run (2 ranks, gloo on CPU) laid out three ways: on one node, on two nodes, by torchrun
DDP = ["trainer=ddp_cpu", *fast(3), "seed=7"]
ONE_NODE = [*DDP, "trainer.devices=2"]
TWO_NODES = [*DDP, "trainer.devices=1", "trainer.num_nodes=2"]


def _cluster_reason() -> str | None:
    start = "(start one with `bash .ci/slurm-cluster start --nodes 2` as root)"
    try:
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no SLURM cluster: sinfo: {exc} {start}"
    if result.returncode != 0 or not result.stdout.strip():
        return f"no SLURM cluster: sinfo: {result.stderr.strip() or 'no nodes'} {start}"
    if len(set(result.stdout.split())) < 2:
        return f"the SLURM tests need 2 nodes; this cluster has {result.stdout.split()} {start}"
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


def nodes() -> list[str]:
    return sorted(set(subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True,
                                     check=True, timeout=30).stdout.split()))


def idle_nodes() -> list[str]:
    listed = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True,
                            timeout=30).stdout.split("\n")
    return sorted({line.split()[0] for line in listed if line.endswith(" idle")})


def job_nodes(job: str) -> set[str]:
    """The nodes SLURM gave `job`'s (latest) allocation, as its accounting (`sacct`) lists them."""
    listed = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "NodeList"], capture_output=True,
                            text=True, check=True, timeout=30).stdout.split()[-1]  # e.g. dlops-node[1-2]
    return set(subprocess.run(["scontrol", "show", "hostnames", listed], capture_output=True, text=True,
                              check=True, timeout=30).stdout.split())


def status_in_report(run_dir: Path, capsys) -> str:
    """The status `dlops report` gives the run in `run_dir`."""
    (row,) = report_json(str(run_dir), capsys=capsys)["runs"]
    return row["status"]


def slurm_job(run_dir: Path) -> str:
    """The SLURM id (`ARRAY_TASK` in a job array) of the job that runs `run_dir`, as the run recorded it."""
    return summary(run_dir)["slurm"]["job"]


def test_a_four_job_sweep_spreads_over_both_nodes_and_scancel_resume_report_work_as_on_one(tmp_path, capsys):
    epochs = 12
    sweep = start_sweep(tmp_path, *fast(f"2,{epochs},0,3"), *PACE)
    wait_until(lambda: list((tmp_path / "multirun").glob("*/*/1/csv/metrics.csv")), sweep, "job 1 to train")
    job_dir = sweep_dir(tmp_path) / "1"
    wait_until(lambda: len(epochs_with(job_dir, "val_loss")) >= 2, sweep, "job 1's second epoch")
    subprocess.run(["scancel", slurm_job(job_dir)], check=True)

    code, output = finish(sweep)
    assert code == 1
    jobs = [sweep_dir(tmp_path) / str(n) for n in range(4)]
    # 1 CPU a job, 2 CPUs a node: SLURM fills one node and puts the other two jobs on the other
    assert set().union(*(job_nodes(slurm_job(job)) for job in jobs)) == set(nodes())
    table = sweep_rows(sweep_dir(tmp_path))
    assert table["0"]["status"] == table["3"]["status"] == "completed"
    assert table["1"]["status"] == "interrupted" and "SIGTERM" in table["1"]["error"]
    assert table["2"]["status"] == "failed" and "max_epochs" in table["2"]["error"]
    assert "2 of 4 jobs did not complete" in output and "Traceback" not in output
    assert summary(job_dir)["status"] == "interrupted" and (job_dir / "checkpoints" / "last.ckpt").is_file()

    result = train(tmp_path, "-m", f"resume={sweep_dir(tmp_path)}", env=env(), check=False, timeout=240)
    assert result.returncode == 1  # job 2's bad input is refused again
    info = summary(job_dir)
    assert info["status"] == "completed" and len(info["attempts"]) == 2  # the last one's is the top one
    assert info["attempts"][0]["status"] == "interrupted"
    assert epochs_with(job_dir, "val_loss") == list(range(epochs))  # each epoch's row exactly once
    table = sweep_rows(sweep_dir(tmp_path))
    assert [table[j]["status"] for j in "0123"] == ["completed", "completed", "refused", "completed"]
    runs = report_json(str(sweep_dir(tmp_path)), capsys=capsys)["runs"]  # read from the login node
    assert sorted(r["status"] for r in runs) == ["completed"] * 3 + ["failed"]
    best = json.loads((sweep_dir(tmp_path) / "best.json").read_text())
    assert best["run_dir"] == runs[0]["run_dir"] and best["best"] == runs[0]["best_val_loss"]


# 40 epochs of real training, no test stage: the jobs that are stopped and resumed below
LONG = [*fast(40), "test=false"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The LONG run, trained straight through on this machine (no SLURM): what a resumed job must equal."""
    run_dir = tmp_path_factory.mktemp("long") / "uninterrupted"
    train(run_dir.parent, *LONG, *NO_PACE, f"hydra.run.dir={run_dir}", env=env())
    return run_dir


def test_a_time_limit_requeues_the_job_until_done_with_an_uninterrupted_runs_weights(tmp_path, request):
    # SLURM's limits are whole minutes and it checks them every 30 s, sending the signal once within
    # signal_delay_s + 30 s of the limit: 60-90 s into each attempt of 2 minutes here. 40 epochs of
    # at least 2.5 s each cannot finish within the first attempt, however fast the machine; a
    # requeued job trains at full speed, done long before its own signal (with a 1-minute limit
    # that could come at once, in any attempt). Preemption (`scontrol requeue`): the DDP test below.
    sweep = start_sweep(tmp_path, *LONG, *PACE[:1], "+callbacks.pace.seconds=2.5",
                        "+callbacks.pace.first_attempt_only=true", "hydra.launcher.timeout_min=2",
                        "hydra.launcher.signal_delay_s=30", "hydra.launcher.max_num_timeout=6")
    uninterrupted = request.getfixturevalue("uninterrupted")  # trained while the job runs
    code, output = finish(sweep, timeout=500)
    assert code == 0, output[-3000:]
    run_dir = sweep_dir(tmp_path) / "0"
    info = summary(run_dir)
    assert info["status"] == "completed" and len(info["attempts"]) == 2
    assert info["attempts"][0]["status"] == "interrupted"  # at the signal, then requeued by itself
    assert epochs_with(run_dir, "val_loss") == list(range(40))  # each epoch's row exactly once
    assert epochs_with(run_dir, "train_loss") == list(range(40))
    expected, mine = weights(uninterrupted), weights(run_dir)
    assert all(torch.equal(mine[k], expected[k]) for k in expected)


@pytest.fixture(scope="module")
def as_root() -> None:
    """Skip unless this process may run commands on the nodes (`.ci/slurm-cluster exec|down|up`)."""
    if os.geteuid() != 0:
        pytest.skip("runs commands on the cluster's nodes (in their namespaces): needs root")


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory) -> Path:
    """The DDP run as 2 processes on this machine, Lightning starting rank 1 (no SLURM)."""
    run_dir = tmp_path_factory.mktemp("ddp") / "direct"
    train(run_dir.parent, *ONE_NODE, f"hydra.run.dir={run_dir}", env=env())
    return run_dir


def test_ddp_across_two_nodes_equals_one_node_and_resumes_exactly_after_a_requeue(tmp_path, request):
    # one rank on each node; requeued mid-run (preemption), its first attempt paced (sleeping
    # changes no weights); the reference: the same run as 2 processes on this machine
    sweep = start_sweep(tmp_path, *TWO_NODES, "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=1",
                        PACE[0], "+callbacks.pace.seconds=2", "+callbacks.pace.first_attempt_only=true")
    wait_until(lambda: list((tmp_path / "multirun").glob("*/*/0/csv/metrics.csv")), sweep, "the job to train")
    run_dir = sweep_dir(tmp_path) / "0"
    wait_until(lambda: epochs_with(run_dir, "val_loss"), sweep, "its first epoch")
    first_nodes = job_nodes(slurm_job(run_dir))
    subprocess.run(["scontrol", "requeue", slurm_job(run_dir)], check=True)
    reference = request.getfixturevalue("ddp_reference")  # trained while the job is requeued
    code, output = finish(sweep, timeout=400)
    assert code == 0, output[-3000:]

    assert first_nodes == job_nodes(slurm_job(run_dir)) == set(nodes())  # each attempt: a rank on each
    info = summary(run_dir)
    assert info["status"] == "completed" and info["epochs_completed"] == 3 and info["host"] in nodes()
    assert [a["status"] for a in info["attempts"][:-1]] == ["interrupted"] and len(info["attempts"]) == 2
    assert [a["slurm"]["restarts"] for a in info["attempts"]] == [0, 1]
    # one run dir, written by global rank 0 only: each epoch's row once
    assert [p.parent for p in sweep_dir(tmp_path).rglob("summary.json")] == [run_dir]
    assert len(list(sweep_dir(tmp_path).rglob("metrics.csv"))) == 1
    assert epochs_with(run_dir, "val_loss") == [0, 1, 2]
    expected, mine = weights(reference), weights(run_dir)
    assert all(torch.equal(mine[k], expected[k]) for k in expected)
    assert info["test_metrics"] == summary(reference)["test_metrics"]
    # resumed again, the completed job says so, and rank 1 does not wait for a rank 0 that trains nothing
    train(tmp_path, "-m", f"resume={sweep_dir(tmp_path)}", env=env(), timeout=240)
    assert "already completed" in (run_dir / "train.log").read_text()
    assert summary(run_dir)["attempts"] == info["attempts"]


def test_torchrun_across_the_two_nodes_trains_one_run_equal_to_one_node(tmp_path, as_root, ddp_reference):
    run_dir, (first, second) = tmp_path / "run", nodes()[:2]
    ranks = [subprocess.Popen(
        ["bash", str(CLUSTER), "exec", node, sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
         f"--node-rank={rank}", "--nproc-per-node=1", f"--master-addr={first}", "--master-port=29400",
         str(TRAIN), *TWO_NODES, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True) for rank, node in enumerate((first, second))]
    outputs = [finish(rank, timeout=300) for rank in ranks]
    assert [code for code, _ in outputs] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1][1]
    info = summary(run_dir)
    assert info["status"] == "completed" and info["host"] == first and info["slurm"] is None
    assert [p.parent for p in tmp_path.rglob("summary.json")] == [run_dir]  # rank 0 wrote, once
    assert epochs_with(run_dir, "val_loss") == [0, 1, 2]
    expected, mine = weights(ddp_reference), weights(run_dir)
    assert all(torch.equal(mine[k], expected[k]) for k in expected)


def test_a_job_whose_node_is_lost_is_requeued_and_resumes_on_the_other_node_exactly(tmp_path, as_root,
                                                                                    uninterrupted, capsys):
    sweep = start_sweep(tmp_path, *LONG, PACE[0], "+callbacks.pace.seconds=1.5",
                        "+callbacks.pace.first_attempt_only=true")
    wait_until(lambda: list((tmp_path / "multirun").glob("*/*/0/csv/metrics.csv")), sweep, "the job to train")
    run_dir = sweep_dir(tmp_path) / "0"
    wait_until(lambda: len(epochs_with(run_dir, "val_loss")) >= 2, sweep, "its second epoch")
    lost = summary(run_dir)["host"]
    assert lost in nodes() and status_in_report(run_dir, capsys) == "running"  # alive on its node
    snapshot = tmp_path / "snapshot"  # the summary as the node left it: `running` there, for good
    snapshot.mkdir()
    shutil.copy(run_dir / "summary.json", snapshot)
    subprocess.run(["bash", str(CLUSTER), "down", lost], check=True, timeout=60)
    try:
        # SLURM takes SlurmdTimeout (15 s here) to call the node down: until then it may be running
        assert status_in_report(snapshot, capsys) == "running"
        wait_until(lambda: status_in_report(snapshot, capsys) == "lost", sweep, "the run to read as lost",
                   timeout=120)
        code, output = finish(sweep, timeout=300)
        assert code == 0, output[-3000:]
    finally:
        subprocess.run(["bash", str(CLUSTER), "up", lost], check=True, timeout=60)
        end = time.time() + 120
        while idle_nodes() != nodes() and time.time() < end:
            time.sleep(1)
    info = summary(run_dir)
    assert info["status"] == "completed" and len(info["attempts"]) == 2
    assert info["attempts"][0]["status"] == "interrupted"  # by the requeued job, as it started
    assert [a["host"] for a in info["attempts"]] == [lost, *(set(nodes()) - {lost})]
    assert epochs_with(run_dir, "val_loss") == list(range(40))  # each epoch's row exactly once
    assert epochs_with(run_dir, "train_loss") == list(range(40))
    expected, mine = weights(uninterrupted), weights(run_dir)
    assert all(torch.equal(mine[k], expected[k]) for k in expected)
    assert status_in_report(run_dir, capsys) == "completed"
    assert idle_nodes() == nodes(), "the lost node did not come back"
