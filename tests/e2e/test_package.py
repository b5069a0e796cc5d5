"""dlops as a dependency of someone's project: a wheel built from this tree, installed into a fresh
virtual environment with the core dependencies only (no extras, no editable install, no repository
on sys.path), trains a user's classes from a folder holding only their module and conf/ with
`dlops train`, and a feature whose extra is missing stops with the install line.

A full `pip install` of the core dependencies from the package index took 9 min 16 s on the shared
2-core machine (torch alone is ~1 GB to unpack). The fresh environment gets them as links to the
distributions installed here instead (the core's requirement closure, read from the wheel's own
metadata, not a list), and `pip check` proves that they satisfy what the wheel declares.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import torch
from helpers import ROOT, summary
from omegaconf import OmegaConf
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.slow

USER_CODE = '''
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class Points(pl.LightningDataModule):
    def __init__(self, batch_size=32):
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage=None):
        x = torch.randn(512, 4, generator=torch.Generator().manual_seed(0))
        self.train_set = TensorDataset(x[:400], x[:400].sum(1))
        self.val_set = TensorDataset(x[400:], x[400:].sum(1))
        self.features = x.shape[1]

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)


class Linear(pl.LightningModule):
    def __init__(self, features, lr=0.01):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(features, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x).squeeze(-1), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_mae", (self.layer(x).squeeze(-1) - y).abs().mean(), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
'''
USER_CONF = {
    "datamodule/points.yaml": "# four random features and their sum\n_target_: mine.Points\nbatch_size: 32\n",
    "model/linear.yaml": "# one linear layer\n_target_: mine.Linear\nfeatures: ${data:features}\nlr: 0.01\n",
}
RUN = ["--config-dir", "conf", "model=linear", "datamodule=points", "monitor=val_mae", "mode=min"]


def build_wheel(out: Path) -> Path:
    """The wheel of this tree, built from a copy of its files (setuptools writes build/ beside them)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "src", "pyproject.toml",
                            "README.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    source = out / "source"
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(out / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    return next((out / "dist").glob("dlops_lightning-*.whl"))


def core_closure(wheel: Path) -> list[metadata.Distribution]:
    """The installed distributions the wheel's core requirements need, transitively (no extras)."""
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        wanted = [Requirement(line.split(":", 1)[1].strip())
                  for line in archive.read(meta).decode().splitlines() if line.startswith("Requires-Dist:")]
    found: dict[str, metadata.Distribution] = {}
    while wanted:
        requirement = wanted.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name not in found:
            found[name] = metadata.distribution(name)
            wanted += [Requirement(r) for r in found[name].requires or []]
    return list(found.values())


def link_into(site: Path, distributions: list[metadata.Distribution], own: set[str]) -> None:
    """Make each distribution importable from `site` through links to its installed files: one
    link per top-level entry, or per entry one level down in a folder several of them share
    (namespace packages such as nvidia/ and hydra_plugins/, which the wheel installs into too)."""
    tops: dict[str, list[tuple[metadata.Distribution, set[str]]]] = {}
    for dist in distributions:
        entries: dict[str, set[str]] = {}
        for file in dist.files or []:
            parts = Path(file).parts
            if parts and parts[0] not in ("..", "__pycache__"):
                entries.setdefault(parts[0], set()).update(parts[1:2])
        for top, children in entries.items():
            tops.setdefault(top, []).append((dist, children))
    for top, owners in tops.items():
        if len(owners) == 1 and top not in own:
            (site / top).symlink_to(Path(owners[0][0].locate_file(top)))
            continue
        (site / top).mkdir(exist_ok=True)
        for dist, children in owners:
            for child in children - {"__pycache__", "__init__.py"}:
                if not (site / top / child).exists():
                    (site / top / child).symlink_to(Path(dist.locate_file(Path(top) / child)))


@pytest.fixture(scope="module")
def core_env(tmp_path_factory) -> dict:
    """A fresh venv with the wheel installed (pip, --no-deps) and only the core dependencies."""
    root = tmp_path_factory.mktemp("package")
    wheel = build_wheel(root)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    link_into(site, core_closure(wheel), own={"dlops", "hydra_plugins"})
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True, timeout=300,
                   capture_output=True)
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=120)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WANDB_", "HYDRA_", "PL_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="")
    project = root / "project"  # what the user has: their module and their conf/, nothing else
    (project / "mine.py").parent.mkdir()
    (project / "mine.py").write_text(USER_CODE)
    for name, text in USER_CONF.items():
        (project / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
        (project / "conf" / name).write_text(text)
    return {"venv": venv, "site": site, "env": env, "project": project, "pip_check": check}


def dlops_cmd(core_env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`dlops ARGS` of the fresh environment, in the user's folder."""
    return subprocess.run([str(core_env["venv"] / "bin" / "dlops"), *args], cwd=core_env["project"],
                          env=core_env["env"], capture_output=True, text=True, timeout=timeout)


def train(core_env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return dlops_cmd(core_env, "train", *RUN, *args, timeout=timeout)


def test_the_wheel_installs_with_the_core_dependencies_alone(core_env):
    assert core_env["pip_check"].returncode == 0, core_env["pip_check"].stdout + core_env["pip_check"].stderr
    code = ("import dlops, dlops.configs as c, importlib.util as u; print(dlops.__file__); "
            "print(c.PACKAGED / 'train.yaml'); print([m for m in ('mlflow', 'wandb', 'optuna', 'onnx', "
            "'onnxruntime', 'fastapi', 'uvicorn') if u.find_spec(m)])")
    where = subprocess.run([str(core_env["venv"] / "bin" / "python"), "-c", code], cwd=core_env["project"],
                           env=core_env["env"], capture_output=True, text=True, timeout=120)
    package, train_yaml, extras = where.stdout.split("\n")[:3]
    assert Path(package).is_relative_to(core_env["site"]) and not Path(package).is_symlink()
    assert Path(train_yaml).is_file() and extras == "[]"


@pytest.fixture(scope="module")
def trained(core_env) -> tuple[subprocess.CompletedProcess, Path]:
    result = train(core_env, "trainer.max_epochs=2", "trainer.limit_train_batches=5")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = sorted((core_env["project"] / "outputs").glob("*/*/summary.json"))
    assert len(runs) == 1
    return result, runs[0].parent


def test_dlops_train_runs_a_users_classes_from_their_folder(core_env, trained):
    result, run_dir = trained
    info = summary(run_dir)
    assert info["status"] == "completed" and info["epochs_completed"] == 2 and info["monitor"] == "val_mae"
    assert (run_dir / "train.log").is_file() and "Traceback" not in result.stderr
    # every Trainer argument without `+`: 5 training batches an epoch, not the 13 the data has
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10
    sources = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.config_sources
    folders = {s.provider: s.path for s in sources if s.schema == "file"}
    assert folders == {"main": str(core_env["project"] / "conf"),  # theirs first, then dlops' own
                       "dlops": str(core_env["site"] / "dlops" / "conf")}


def test_dlops_report_reads_the_run(core_env, trained):
    _, run_dir = trained
    result = dlops_cmd(core_env, "report", "outputs", "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout and run_dir.name in result.stdout


def test_a_feature_whose_extra_is_missing_stops_with_the_install_line(core_env, trained):
    before = sorted((core_env["project"] / "outputs").rglob("*"))
    result = train(core_env, "logger=mlflow", timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "pip install 'dlops-lightning[mlflow]'" in result.stderr, result.stderr
    assert sorted((core_env["project"] / "outputs").rglob("*")) == before  # no run dir made
    optuna = dlops_cmd(core_env, "train", "-m", *RUN, "hparams_search=mnist_optuna", timeout=300)
    assert optuna.returncode == 1 and "pip install 'dlops-lightning[optuna]'" in optuna.stderr
    assert "Traceback" not in optuna.stderr and "warn" not in optuna.stderr.lower()
    assert not (core_env["project"] / "multirun").exists()


def test_ddp_ranks_of_dlops_train_start_as_dlops_train(core_env):
    result = train(core_env, "trainer=ddp_cpu", "trainer.max_epochs=1", "hydra.run.dir=ddp")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    info = summary(core_env["project"] / "ddp")
    assert info["status"] == "completed" and info["epochs_completed"] == 1
    # rank 1, started by Lightning as `python .../bin/dlops train ...`, logs to the console
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr


def test_help_of_dlops_train_is_dlops_own(core_env):
    result = dlops_cmd(core_env, "train", "--help", timeout=120)
    assert result.returncode == 0 and "monitor" in result.stdout and "powered by Hydra" not in result.stdout
    assert "linear+" in result.stdout and "points+" in result.stdout  # the user's options, marked

