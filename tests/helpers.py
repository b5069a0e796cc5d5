"""Shared test helpers: run `python train.py` for real in a temporary working directory, start
runs in the background, and read back what they wrote."""

import csv
import gzip
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dlops.cli import main
from dlops.data.mnist import MNISTDataModule, load_bundled
from dlops.rundir.summary import write as write_summary

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "train.py"
# batches of 256: the bundled digits' training split is 15 steps an epoch
STEPS_PER_EPOCH = 15


def fast(epochs: int | str = 2) -> list[str]:
    """The end-to-end tests' one set of fast overrides: EPOCHS (a number, or a sweep's "1,3") short
    epochs of real training on the bundled digits, with validation, checkpoints and test as in any
    run. Tests of plumbing alone use the product's own smoke config, `debug=fast` (one batch)."""
    return [f"trainer.max_epochs={epochs}", "datamodule.batch_size=256"]


# the warnings a run may print: each asks the user to do something (dlops' own say how)
ASKING = (
    "the run completed, but its monitored metric",  # lower model.optimizer.lr or check the data
    "hold their content only in the alpha channel",  # an image folder's glyphs: check the images
)


def warning_lines(output: str) -> list[str]:
    """The warnings in a run's output: Python's and Lightning's (`file.py:12: ...`), logging's
    `[WARNING]` lines, anything naming a `...Warning`."""
    return [line for line in output.splitlines()
            if re.search(r"\.py:\d+: |\[WARNING\]|[a-z]Warning\b", line)]


def unasked_warnings(output: str) -> list[str]:
    """Warnings that ask nothing of the user: any not in ASKING."""
    return [line for line in warning_lines(output) if not any(asks in line for asks in ASKING)]


def error_of(command: str, output: str) -> str:
    """A `dlops COMMAND` output less the lines that said what it was doing before it failed
    (`dlops eval: loading RUN: ...`): the error message, which should start the rest."""
    return re.sub(rf"\A(dlops {command}: (?!error:).*\n)+", "", output.strip())


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child run: no GPU, no tracker credentials, no Lightning seed left by a
    test that ran Lightning in this process, our code first."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WANDB_", "HYDRA_", "PL_", "MLFLOW_")) and k != "CUDA_VISIBLE_DEVICES"}
    # one thread a run: tests run side by side (pytest -n), and small models train faster so
    env.setdefault("OMP_NUM_THREADS", "1")
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


class Server:
    """`dlops serve RUN ARGS` as a process of its own on 127.0.0.1 (any free port), answering."""

    def __init__(self, run: Path, *args: str, env: dict | None = None, preexec=None) -> None:
        import httpx

        handle, self.log = tempfile.mkstemp(suffix=".log")
        os.close(handle)
        with open(self.log, "ab") as log:  # the server's own offset: reading it back moves nothing
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dlops.cli", "serve", str(run), "--port", "0", *args],
                env=env or clean_env(), stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec,
                start_new_session=True)
        deadline = time.monotonic() + 60
        while " on http://" not in self.output():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.output()
            time.sleep(0.05)
        self.url = self.output().split(" on ")[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        while True:  # the port listens before uvicorn answers
            try:
                httpx.get(f"{self.url}/health", timeout=5)
                break
            except httpx.TransportError:
                assert self.proc.poll() is None and time.monotonic() < deadline, self.output()
                time.sleep(0.05)

    def output(self) -> str:
        return Path(self.log).read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        return code, self.output()


def state_dict(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


COLUMNS = ["epoch", "step", "test_acc", "test_auroc", "test_loss", "train_acc", "train_loss",
           "val_acc", "val_auroc", "val_loss"]


def write_run(run_dir: Path, overrides: list[str], val_loss: list[float], status: str = "completed",
              summary: bool = True, **fields) -> Path:
    """A run dir as dlops writes it: .hydra/, csv/metrics.csv (Lightning CSVLogger rows) and
    summary.json; `fields` replace summary keys."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run_dir / ".hydra" / "config.yaml").write_text(
        "monitor: val_loss\nmode: min\ntrainer:\n  max_epochs: 3\n")
    done = status == "completed"
    test = {"test_loss": val_loss[-1] + 0.01, "test_acc": 1 - val_loss[-1],
            "test_auroc": 0.99} if done else {}
    rows = []
    for epoch, loss in enumerate(val_loss):
        step = 10 * (epoch + 1)
        rows.append({"epoch": epoch, "step": step, "val_loss": loss, "val_acc": 1 - loss,
                     "val_auroc": 0.9})
        rows.append({"epoch": epoch, "step": step, "train_loss": loss + 0.1, "train_acc": 0.9})
    if done:
        rows.append({"epoch": len(val_loss), "step": 10 * len(val_loss), **test})
    (run_dir / "csv").mkdir()
    with open(run_dir / "csv" / "metrics.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    if summary:
        last = {k: v for row in rows if "test_loss" not in row for k, v in row.items()}
        write_summary(run_dir, {
            "schema": 1, "status": status, "name": "train", "run_dir": str(run_dir),
            "overrides": overrides, "started_at": "2026-01-01T10:00:00+00:00",
            "started_at_unix": time.time() - 100, "duration_s": 12.5 if done else None,
            "monitor": "val_loss", "mode": "min", "max_epochs": 3,
            "epochs_completed": len(val_loss),
            "last_metrics": {k: v for k, v in last.items() if k not in ("epoch", "step")},
            "best_metric": min(val_loss) if val_loss else None,
            "test_metrics": test,
            "error": None if status != "failed" else {"type": "ValueError", "message": "bad <lr>"},
            "host": os.uname().nodename, "pid": 1, **fields,
        })
    return run_dir


def report(*args: str, capsys) -> tuple[int, str, str]:
    code = main(["report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def report_json(*args: str, capsys) -> dict:
    code, out, err = report(*args, "--format", "json", capsys=capsys)
    assert code == 0, err
    return json.loads(out)


def datamodule(cls: type, data_dir: Path) -> MNISTDataModule:
    dm = cls(source="torchvision", data_dir=str(data_dir), download=False, positive_digit=None,
             batch_size=64)
    dm.setup("fit")
    return dm


def strict(text: str):
    """Parse JSON as browsers and jq do: NaN and Infinity are errors."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def mlflow_history(client: Any, run_id: str) -> dict[str, list[tuple[int, float]]]:

    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in client.get_run(run_id).data.metrics}


def sweep_rows(sweep: Path) -> list[dict]:
    with open(sweep / "summary.csv") as file:
        return list(csv.DictReader(file))


def write_idx(raw_dir: Path, n_train: int = 60, n_test: int = 20) -> tuple[Any, Any]:
    """Write real MNIST IDX files (gzipped) made from the bundled digits."""
    images, labels = load_bundled()
    raw_dir.mkdir(parents=True)
    for prefix, idx in (("train", slice(0, n_train)), ("t10k", slice(n_train, n_train + n_test))):
        x, y = images[idx, 0].numpy(), labels[idx].numpy().astype(np.uint8)
        with gzip.open(raw_dir / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, len(x), 28, 28) + x.tobytes())
        with gzip.open(raw_dir / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, len(y)) + y.tobytes())
    return images, labels
