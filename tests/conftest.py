"""Shared helpers: run `python train.py` for real in a temporary working directory."""

import json
import os
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
    result = subprocess.run([sys.executable, str(TRAIN), *overrides], cwd=cwd, env=env or clean_env(),
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"train.py {' '.join(overrides)} exited {result.returncode}:\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def run_dirs(cwd: Path, kind: str = "outputs") -> list[Path]:
    """Run directories under cwd/outputs (or cwd/multirun), oldest first."""
    return sorted(p.parent for p in (cwd / kind).rglob("summary.json"))


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())
