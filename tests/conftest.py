"""Shared helpers: run `python train.py` for real in a temporary working directory."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

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
