"""A run as a person sees it on a terminal, and what its trackers keep of it.

One short training under a pseudo-terminal, of a model written the Lightning-template way (metric
names with a slash, `monitor=val/loss`) whose validation loss is best in its second epoch, not
its last, tracked in CSV, TensorBoard and W&B. The same run answers the terminal's claims (the
bar, log lines, epoch numbering, model summary) and the trackers' (W&B's best, TensorBoard's
hp_metric and epochs), so that they cost one `python train.py`.
"""

import csv
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from helpers import TRAIN, clean_env, report_json, run_dirs, summary
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb_records import offline_runs, run_contents

from dlops.readers.curves import curve_panels
from dlops.readers.discover import read_curves

pytestmark = pytest.mark.slow

VAL_LOSS = [0.5, 0.3, 0.4]  # epoch 1 is the best, the last epoch is not
CODE = f'''
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

VAL_LOSS = {VAL_LOSS}


class Rows(pl.LightningDataModule):
    def setup(self, stage=None):
        x = torch.randn(512, 4, generator=torch.Generator().manual_seed(0))
        self.data = TensorDataset(x, x.sum(1))

    def train_dataloader(self):  # 64 batches an epoch: more than Lightning's logging interval
        return DataLoader(self.data, batch_size=8)

    def val_dataloader(self):
        return DataLoader(self.data, batch_size=256)

    def test_dataloader(self):
        return DataLoader(self.data, batch_size=256)


class Scripted(pl.LightningModule):
    """Trains a linear layer for real; its validation loss follows VAL_LOSS."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x).squeeze(-1), y)
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", VAL_LOSS[self.current_epoch])
        self.log("val/acc", 1 - VAL_LOSS[self.current_epoch])

    def test_step(self, batch, batch_idx):
        self.log("test/acc", 0.75)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)
'''
LOG_LINE = re.compile(r"\[\d\d:\d\d:\d\d\]\[[\w.]+\]\[[A-Z]+\] ")
BAR = re.compile(r"\d+/\d+ \[\d\d:\d\d<")  # tqdm's `15/64 [00:01<00:02, ...]`


def run_in_terminal(args: list[str], cwd: Path, env: dict, timeout: float = 300) -> tuple[int, str]:
    """Run a command with a pseudo-terminal (160 columns) as its stdin, stdout and stderr: its
    exit code and everything it wrote to the terminal."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    process = subprocess.Popen(args, cwd=cwd, env=env, stdin=terminal, stdout=terminal, stderr=terminal,
                               start_new_session=True)
    os.close(terminal)
    output, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 0.5)[0]:
                try:
                    chunk = os.read(controller, 1 << 16)
                except OSError:  # the other side closed: the process is done
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        else:
            process.kill()
            pytest.fail(f"the run did not end in {timeout}s:\n{output.decode(errors='replace')[-3000:]}")
    finally:
        os.close(controller)
    return process.wait(timeout=30), output.decode("utf-8", errors="replace")


def screen_lines(output: str) -> list[str]:
    """The lines a terminal shows for `output`: carriage returns overwrite a line from its start,
    cursor-up (ESC [ n A) moves back to an earlier line, other escape sequences draw nothing."""
    lines, row, column = [[]], 0, 0
    for token in re.findall(r"\x1b\[(\d*)([A-Za-z])|(\r)|(\n)|([^\x1b\r\n]+)", output):
        count, code, carriage, newline, text = token
        if code == "A":
            row = max(row - int(count or 1), 0)
        elif carriage:
            column = 0
        elif newline:
            row += 1
            if row == len(lines):
                lines.append([])
        elif text:
            line = lines[row]
            line[column:column + len(text)] = list(text)
            column += len(text)
    return ["".join(line).rstrip() for line in lines]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, int, list[str], str]:
    """The run dir, the exit code, the terminal's lines and its raw output."""
    root = tmp_path_factory.mktemp("terminal")
    (root / "proj" / "conf" / "model").mkdir(parents=True)
    (root / "proj" / "conf" / "datamodule").mkdir()
    (root / "proj" / "scripted.py").write_text(CODE)
    (root / "proj" / "conf" / "model" / "scripted.yaml").write_text("_target_: scripted.Scripted\n")
    (root / "proj" / "conf" / "datamodule" / "rows.yaml").write_text("_target_: scripted.Rows\n")
    (root / "work").mkdir()
    env = clean_env(WANDB_PROJECT="from-env", TERM="xterm", COLUMNS="160")
    env["PYTHONPATH"] += f":{root / 'proj'}"
    code, output = run_in_terminal(
        [sys.executable, str(TRAIN), "--config-dir", str(root / "proj" / "conf"), "model=scripted",
         "datamodule=rows", "monitor=val/loss", "mode=min", "trainer.max_epochs=3",
         "logger=[csv,tensorboard,wandb]"], root / "work", env)
    [run_dir] = run_dirs(root / "work")
    return run_dir, code, screen_lines(output), output


def test_the_bar_shows_the_training_loss_and_the_monitor_and_no_log_line_shares_its_line(run):
    run_dir, code, lines, _ = run
    assert code == 0, "\n".join(lines[-40:])
    bars = [line for line in lines if BAR.search(line)]
    assert any(re.search(r"^Epoch 2/2: .*loss=[\d.]+, val/loss=0\.4", line) for line in bars), bars
    logs = [line for line in lines if LOG_LINE.search(line)]
    assert len(logs) > 5 and sum("epoch " in line for line in logs) == 3
    glued = [line for line in logs if BAR.search(line) or not LOG_LINE.match(line)]
    assert glued == []  # every log line starts a terminal line of its own, bar-free


def test_epochs_are_numbered_from_zero_in_the_bar_the_log_the_checkpoint_and_the_summary(run):
    run_dir, _, _, output = run
    log = (run_dir / "train.log").read_text()
    assert re.findall(r"\] epoch (\d/\d): ", log) == ["0/2", "1/2", "2/2"]
    assert sorted(set(re.findall(r"Epoch (\d/\d): ", output))) == ["0/2", "1/2", "2/2"]  # the bar
    info = summary(run_dir)
    assert info["epochs_completed"] == 3 and info["max_epochs"] == 3  # counts: epochs 0, 1 and 2
    assert "epoch=1-" in info["best_checkpoint"] and info["best_metric"] == pytest.approx(0.3)
    with open(run_dir / "csv" / "metrics.csv") as file:
        assert sorted({int(r["epoch"]) for r in csv.DictReader(file) if r["val/loss"]}) == [0, 1, 2]


def test_a_model_summary_is_a_table_on_the_terminal_and_one_line_in_the_log(run):
    run_dir, _, lines, _ = run
    header = lines.index(next(line for line in lines if line.split() == ["layer", "type", "parameters"]))
    assert lines[header + 1].split() == ["layer", "Linear", "5"]
    assert lines[header + 2].split()[:2] == ["total", "5"]
    log = (run_dir / "train.log").read_text().splitlines()
    [line] = [line for line in log if "model Scripted" in line]
    assert line.endswith("model Scripted: 5 parameters (all trainable): layer Linear 5")
    assert not any(line.split() == ["layer", "type", "parameters"] for line in log)


def test_the_end_of_run_line_and_the_readers_show_slash_named_metrics(run, capsys):
    run_dir, _, _, _ = run
    log = (run_dir / "train.log").read_text()
    assert re.search(r"completed in [\d.]+s after 3 epochs: val/loss=0\.4000, val/acc=0\.6000, "
                     r"test/acc=0\.7500", log)
    curves = read_curves(run_dir / "csv" / "metrics.csv", run_dir)
    assert curve_panels(curves) == {"loss": ["train/loss", "val/loss"], "acc": ["val/acc"]}
    assert (run_dir / "plots" / "learning_curves.png").stat().st_size > 10_000
    [row] = report_json(str(run_dir), "--sort", "test/acc", capsys=capsys)["runs"]
    assert (row["best_val/loss"], row["final_val/loss"], row["test/acc"]) == pytest.approx((0.3, 0.4, 0.75))


def test_wandb_summary_holds_the_best_val_loss_of_a_run_whose_last_epoch_was_not_its_best(run):
    run_dir, _, lines, output = run
    [run_file] = offline_runs(run_dir)
    contents = run_contents(run_file)
    assert contents["summary"]["val/loss"] == pytest.approx({"min": 0.3, "last": 0.4})
    assert contents["project"] == "from-env"  # WANDB_PROJECT, as the config leaves project null
    assert summary(run_dir)["wandb"]["project"] == "from-env"
    assert not re.search(r"warn", output, re.IGNORECASE)  # no warning lines in a normal run


def test_tensorboard_gets_one_hp_metric_the_best_and_epoch_once_per_epoch(run):
    run_dir, _, _, _ = run
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert [e.value for e in events.Scalars("hp_metric")] == pytest.approx([0.3])
    assert [e.value for e in events.Scalars("epoch")] == [0, 1, 2]
    assert [e.value for e in events.Scalars("val/loss")] == pytest.approx(VAL_LOSS)
