"""What resumability costs: one checkpoint write, and a training run with a checkpoint every step.

    PYTHONPATH=src python bench/bench_resume.py [--repeats 3]

1. Writing a real `last.ckpt` (the default MLP, with optimizer state): `save_atomic` (temp file,
   fsync, rename) against Lightning's own writer (`_atomic_save`, no fsync), median of 30 each.
2. `python train.py trainer.max_epochs=3` with `checkpoint_every_n_steps` unset (last.ckpt at
   epoch ends) and `=1` (every one of the 15 steps per epoch at batch size 256), as fresh
   processes, alternating so that other load on the machine falls on both; the median of each
   run's `duration_s`.
Writes bench/results/bench_resume.json.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.cloud_io import _atomic_save

from dlops.data.mnist import MNISTDataModule
from dlops.lifecycle.checkpoints import save_atomic
from dlops.models.classifier import Classifier

ROOT = Path(__file__).resolve().parents[1]


def checkpoint_writes(folder: Path, repeats: int = 30) -> dict[str, float]:
    """Median milliseconds to write one real training checkpoint, per writer."""
    model = Classifier({"_target_": "dlops.models.nets.MLP", "hidden_sizes": [100]},
                       {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001})
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=folder)
    trainer.fit(model, datamodule=MNISTDataModule(batch_size=256))
    checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
    times = {}
    for name, write in (("save_atomic (fsync)", save_atomic), ("lightning _atomic_save", _atomic_save)):
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            write(checkpoint, folder / "last.ckpt")
            samples.append((time.perf_counter() - start) * 1000)
        times[name] = round(statistics.median(samples), 2)
    times["checkpoint_bytes"] = (folder / "last.ckpt").stat().st_size
    return times


def run_duration(every: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env.update(PYTHONPATH=str(ROOT / "src"), CUDA_VISIBLE_DEVICES="")
    overrides = ["trainer.max_epochs=3", "datamodule.batch_size=256", "test=false"]
    if every:
        overrides.append(f"checkpoint_every_n_steps={every}")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=tmp, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        [summary] = Path(tmp).glob("outputs/*/*/summary.json")
        return json.loads(summary.read_text())["duration_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        writes = checkpoint_writes(Path(tmp))
    runs: dict[str, list[float]] = {"last.ckpt at epoch ends": [], "last.ckpt every step": []}
    for _ in range(args.repeats):
        runs["last.ckpt at epoch ends"].append(run_duration(None))
        runs["last.ckpt every step"].append(run_duration("1"))
    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs), torch {torch.__version__}",
        "checkpoint_write_ms": writes,
        "train_3_epochs_duration_s": {k: {"median": statistics.median(v), "runs": v}
                                      for k, v in runs.items()},
    }
    print(json.dumps(result, indent=1))
    out = ROOT / "bench" / "results" / "bench_resume.json"
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
