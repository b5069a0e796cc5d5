"""Shared test helpers: run `python train.py` for real in a temporary working directory, start
runs in the background, and read back what they wrote."""

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "train.py"
# small and quick, but the whole pipeline: data, fit, validation, checkpoints, test
QUICK = ["trainer.max_epochs=2", "datamodule.batch_size=128"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child run: no GPU, no tracker credentials, our code first."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WANDB_", "HYDRA_")) and k != "CUDA_VISIBLE_DEVICES"}
    env.update(CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT / "src"), **extra)
    return env


def train(cwd: Path, *overrides: str, timeout: float = 300, env: dict | None = None,
          check: bool = True) -> subprocess.CompletedProcess:
    """Run `python train.py OVERRIDES` in `cwd`; with `check`, fail the test on a non-zero exit."""
    # its own session, so that a timeout also ends the processes it started (DDP ranks, workers)
    with subprocess.Popen([sys.executable, str(TRAIN), *overrides], cwd=cwd, env=env or clean_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(f"train.py {' '.join(overrides)} ran over {timeout}s:\n"
                        f"{stdout[-3000:]}\n{stderr[-3000:]}")
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if check and result.returncode != 0:
        pytest.fail(f"train.py {' '.join(overrides)} exited {result.returncode}:\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def run_dirs(cwd: Path, kind: str = "outputs") -> list[Path]:
    """Run directories under cwd/outputs (or cwd/multirun), oldest first."""
    return sorted(p.parent for p in (cwd / kind).rglob("summary.json"))


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def metric_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as file:
        return list(csv.DictReader(file))


def epochs_with(rows: list[dict], metric: str) -> list[int]:
    """The epoch of every row that has `metric`, in file order (duplicates stay)."""
    return [int(r["epoch"]) for r in rows if r.get(metric)]


STARTED: list[subprocess.Popen] = []


def start(cwd: Path, *overrides: str, env: dict | None = None) -> subprocess.Popen:
    """Start `python train.py OVERRIDES` in its own session, without waiting; output to a file
    (a pipe nobody reads while the run trains could fill up and stall it)."""
    output = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by _end_started_runs
    process = subprocess.Popen([sys.executable, str(TRAIN), *overrides], cwd=cwd, env=env or clean_env(),
                               stdout=output, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    process.output = output
    STARTED.append(process)
    return process


def finish(process: subprocess.Popen, timeout: float = 120) -> str:
    """Wait for a started run to end; its output."""
    process.wait(timeout=timeout)
    process.output.seek(0)
    return process.output.read()


def wait_for(cwd: Path, pattern: str, ready, process: subprocess.Popen, timeout: float = 240) -> Path:
    """Poll until a summary.json matching `pattern` under `cwd` satisfies `ready(summary)`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"train.py ended early:\n{finish(process)[-3000:]}"
        for path in cwd.glob(pattern):
            try:
                if ready(json.loads(path.read_text())):
                    return path.parent
            except ValueError:
                pass  # caught between writes: try again
        time.sleep(0.02)
    raise AssertionError(f"no {pattern} became ready in {timeout}s")


def state_dict(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]
