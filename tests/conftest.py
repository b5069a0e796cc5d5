"""Fixtures shared by every test module; the helpers themselves live in helpers.py."""

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, STARTED, write_run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The SLURM tests first: they take the longest, mostly waiting on the cluster, while the other
    workers fill that time (pytest-xdist keeps this order with --no-loadscope-reorder)."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is None)


@pytest.fixture(autouse=True)
def _end_started_runs():
    """A test that fails half-way leaves no training process behind."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.output.close()


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A seed x model sweep with different numbers per job, plus a failed job."""
    root = tmp_path / "multirun" / "2026-01-01" / "10-00-00"
    losses = {("1", "mlp"): [0.5, 0.30], ("2", "mlp"): [0.6, 0.34],
              ("1", "cnn"): [0.4, 0.20], ("2", "cnn"): [0.3, 0.26]}
    for num, ((seed, model), loss) in enumerate(losses.items()):
        write_run(root / str(num), [f"seed={seed}", f"model={model}", "trainer.max_epochs=2"], loss)
    write_run(root / "4", ["seed=3", "model=mlp", "trainer.max_epochs=2"], [], status="failed")
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    from common import make_data

    root = tmp_path_factory.mktemp("bench-data")
    make_data(root)
    return root


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a real tmpfs of a given size (e.g. "700k") under tmp_path; unmounted afterwards."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount(8) to make a real small file system (a tmpfs)")
    mounted = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
        mounted.append(where)
        return where
    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A new SQLite store for this module's in-process tests (making its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


@pytest.fixture(autouse=True)
def _default_lightning_package():
    """Each test starts with dlops' default Lightning package: a command run in this process (e.g.
    `dlops eval` of a pytorch_lightning run) makes its own package the current one."""
    from dlops import lightning

    lightning.use(lightning.DEFAULT)
