"""Framework cost per training step: the Classifier on a one-pixel net, so that compute is ~nothing.

In one process, interleaved, CPU time per step (one torch thread) of:

  hand-written      the same module stepped by hand (forward, loss, backward, Adam, running sums)
  Lightning bare    Trainer without callbacks, logger or progress bar, as Lightning sets it up
  dlops, before     conf/'s default callbacks and loggers, without dlops.overhead's removals: the
                    NVML probe at every step, the default profiler, a progress bar, Lightning's
                    batch transfer and nn.Module.__setattr__ for Lightning's `_current_fx_name`
  dlops, terminal   as `python train.py` in a terminal (with its progress bar, which shows the
                    running training loss and the monitored metric)
  dlops, terminal, Lightning's bar   the same with Lightning's plain TQDMProgressBar instead
  dlops             as `python train.py` with its output going to a file (no progress bar)

    python bench/bench_step.py [--rounds 5]

Writes bench/results/step.json and step.md (`--name NAME`: NAME.json and NAME.md).
"""

import argparse
import os
import statistics
import tempfile
import time

import pytorch_lightning as pl
import torch
from common import ROOT, machine, save, stats
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from pytorch_lightning.callbacks import TQDMProgressBar

from dlops.callbacks.bar import ProgressBar
from dlops.callbacks.progress import SummaryProgress
from dlops.callbacks.resumable import Resumable
from dlops.data.base import InMemoryDataModule, Split
from dlops.lifecycle.resolvers import register_resolvers
from dlops.models.classifier import Classifier
from dlops.overhead import NoProfiler, skip_gpu_probes

STEPS = 1000
NET = {"_target_": "dlops.models.nets.MLP", "hidden_sizes": []}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.001}
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"  # what importing Lightning sets


class Before(Classifier):
    """The Classifier as it was: every attribute set through nn.Module.__setattr__."""

    __setattr__ = torch.nn.Module.__setattr__


class OnePixel(InMemoryDataModule):
    """STEPS batches of 64 one-pixel images, served like every dlops datamodule serves them."""

    def load(self) -> tuple[Split, Split, Split]:
        self.class_names = ["0", "1"]
        train = Split(torch.zeros(STEPS * 64, 1, 1, 1, dtype=torch.uint8),
                      torch.zeros(STEPS * 64, dtype=torch.long))
        small = Split(train.images[:128], train.labels[:128])
        return train, small, small


class OnePixelBefore(OnePixel):
    """The same batches moved to the device by Lightning's generic walk through the batch."""

    transfer_batch_to_device = pl.LightningDataModule.transfer_batch_to_device


class StepClock(pl.Callback):
    """CPU seconds of each epoch's training batches (validation excluded)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.process_time()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.seconds.append(time.process_time() - self.start)


def hand_written(epochs: int) -> list[float]:
    os.environ.pop(NVML_CHECK, None)  # a process without Lightning
    model = Classifier(net=NET, optimizer=ADAM, input_shape=(1, 1, 1))
    optimizer = model.configure_optimizers()
    data = OnePixel(batch_size=64)
    data.setup()
    seconds = []
    for _ in range(epochs):
        start = time.process_time()
        for images, labels in data.train_dataloader():
            logits = model(images)
            loss = model._loss(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                n = labels.numel()
                correct = ((logits > 0).long() == labels).sum()
                model.train_sums.add_(torch.stack([loss * n, correct, loss.new_tensor(n)]))
        seconds.append(time.process_time() - start)
    return seconds


def lightning(epochs: int, cfg, run_dir: str, variant: str) -> list[float]:
    """One fit of the one-pixel model; `variant` is "bare", "before", "terminal", "lightning bar"
    or "file"."""
    os.environ[NVML_CHECK] = "1"  # as importing Lightning left it
    clock = StepClock()
    callbacks: list = [clock]
    model_type, data_type, extra = Classifier, OnePixel, {}
    if variant == "bare":
        extra = {"enable_progress_bar": False, "logger": False, "enable_checkpointing": False}
    else:
        callbacks += [instantiate(c) for c in cfg.callbacks.values()
                      if not c._target_.endswith(("LearningRateMonitor", "ProgressBar"))]
        callbacks += [Resumable(f"{run_dir}/checkpoints"), SummaryProgress(run_dir, {})]
        extra = {"logger": [instantiate(c) for c in cfg.logger.values()]}
    if variant in ("before", "lightning bar"):
        callbacks.append(TQDMProgressBar(refresh_rate=cfg.callbacks.progress_bar.refresh_rate))
    elif variant == "terminal":
        callbacks.append(ProgressBar(cfg.callbacks.progress_bar.refresh_rate, monitor="val_loss"))
    else:
        extra["enable_progress_bar"] = False
    if variant == "before":
        model_type, data_type = Before, OnePixelBefore
    elif variant != "bare":
        skip_gpu_probes()
        extra["profiler"] = NoProfiler()
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, enable_model_summary=False,
                         default_root_dir=run_dir, **extra)
    model = model_type(net=NET, optimizer=ADAM, input_shape=(1, 1, 1))
    trainer.fit(model, datamodule=data_type(batch_size=64))
    return clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--name", default="step", help="results file name: bench/results/NAME.{json,md}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    register_resolvers()
    us: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="dlops-step-") as run_dir:
        with initialize_config_dir(config_dir=str(ROOT / "src" / "dlops" / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[f"paths.output_dir={run_dir}",
                                              f"paths.data_dir={run_dir}"])
        variants = {
            "hand-written": lambda: hand_written(args.epochs),
            "Lightning bare": lambda: lightning(args.epochs, cfg, run_dir, "bare"),
            "dlops, before": lambda: lightning(args.epochs, cfg, run_dir, "before"),
            "dlops, terminal": lambda: lightning(args.epochs, cfg, run_dir, "terminal"),
            "dlops, terminal, Lightning's bar": lambda: lightning(args.epochs, cfg, run_dir, "lightning bar"),
            "dlops": lambda: lightning(args.epochs, cfg, run_dir, "file"),
        }
        for r in range(args.rounds):
            for name, run in variants.items():
                us.setdefault(name, []).extend(s / STEPS * 1e6 for s in run())
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} {statistics.median(v):.0f}" for k, v in us.items()) + " us/step", flush=True)
    results = {"rounds": args.rounds, "epochs": args.epochs, "machine": machine(),
               "us_per_step": {k: stats(v) for k, v in us.items()}}
    hand = results["us_per_step"]["hand-written"]["min"]
    lines = [f"CPU microseconds per training step, a one-pixel Classifier (batch 64) so that "
             f"compute is negligible; {args.rounds} interleaved rounds x {args.epochs} epochs of "
             f"{STEPS} steps, 1 torch thread. min and median over epochs.", "",
             "| loop | min us/step | median us/step | framework cost over hand-written (min) |",
             "|---|---|---|---|"]
    for name, s in results["us_per_step"].items():
        lines.append(f"| {name} | {s['min']:.0f} | {s['median']:.0f} | {s['min'] - hand:.0f} |")
    command = f"python bench/bench_step.py --rounds {args.rounds}" + (
        f" --name {args.name}" if args.name != "step" else "")
    lines += ["", f"Command: `{command}`; 1-min load "
              f"average at the end: {results['machine']['load_average_1min']:.2f}.", ""]
    save(args.name, results, "\n".join(lines))


if __name__ == "__main__":
    main()
