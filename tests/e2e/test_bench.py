"""The benchmark measures equal work: the same data for each pipeline, a timer inside a real run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import fast

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from epoch_timer import epoch_seconds, train_seconds  # noqa: E402


@pytest.mark.slow
def test_epoch_timer_times_a_real_run(tmp_path):
    timing = tmp_path / "timing.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "bench")]),
           "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *fast(),
         "+callbacks.epoch_timer._target_=epoch_timer.EpochTimer",
         f"+callbacks.epoch_timer.path={timing}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    times = json.loads(timing.read_text())
    assert times["fit_start"] < times["first_step"] < times["epoch_starts"][1] < times["fit_end"]
    epochs, training = epoch_seconds(times), train_seconds(times)
    assert len(epochs) == len(training) == 2
    assert all(0 < t < e for t, e in zip(training, epochs, strict=True))
    assert sum(epochs) == pytest.approx(times["fit_end"] - times["epoch_starts"][0])
    assert len(epoch_seconds(times, "cpu_")) == 2
    summary = json.loads(next(tmp_path.glob("outputs/*/*/summary.json")).read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
