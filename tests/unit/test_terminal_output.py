"""What a run prints for people: the end-of-run line, epoch labels, the model summary, the sweep
summary in a log."""

import torch

from dlops.callbacks.bar import epoch_label
from dlops.lifecycle.outcome import outcome_metrics
from dlops.lifecycle.sweep import print_sweep_summary
from dlops.models.nets import MLP
from dlops.models.summary import summary_line, summary_table


def test_the_end_of_run_line_shows_the_monitor_first_and_every_val_and_test_metric_whatever_the_separator():
    summary = {"monitor": "val/acc", "test_metrics": {"test/acc": 0.9},
               "last_metrics": {"train/loss": 0.2, "val/loss": 0.3, "val/acc": 0.8, "val.f1": 0.7, "lr": 0.1}}
    assert outcome_metrics(summary) == "val/acc=0.8000, val/loss=0.3000, val.f1=0.7000, test/acc=0.9000"
    summary = {"monitor": "loss_ema", "test_metrics": {}, "last_metrics": {"loss_ema": 0.5, "val_mae": 3.0}}
    assert outcome_metrics(summary) == "loss_ema=0.5000, val_mae=3.0000"  # the monitor, whatever its name


def test_epochs_are_labelled_from_zero_against_the_last_epoch():
    assert [epoch_label(e, 3) for e in range(3)] == ["0/2", "1/2", "2/2"]
    assert epoch_label(4, -1) == "4" and epoch_label(4, None) == "4"  # no end: the number alone


def test_the_model_summary_is_one_line_and_a_table_of_layers_with_parameter_counts():
    model = torch.nn.Sequential()
    model.add_module("net", MLP((1, 28, 28), 10, hidden_sizes=[100]))
    model.net[1].weight.requires_grad_(False)
    line = summary_line(model)
    assert line == ("model Sequential: 79,510 parameters (1,110 trainable): net MLP 79,510, "
                    "net.1 Linear 78,500, net.3 Linear 1,010")
    assert "\n" not in line
    table = summary_table(model).splitlines()
    assert table[0].split() == ["layer", "type", "parameters"]
    assert [row.split()[:3] for row in table[1:4]] == [
        ["net", "MLP", "79,510"], ["net.1", "Linear", "78,500"], ["net.3", "Linear", "1,010"]]
    assert table[-1].split() == ["total", "79,510", "(1,110", "trainable)"]
    deep = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(12)])
    assert summary_line(deep).endswith("7 Linear 6, and 4 more layers")  # a long model: one short line


def test_the_sweep_summary_never_wraps_in_a_log(tmp_path, capsys):
    long = ["model.optimizer.lr=0.0003", "model.net.hidden_sizes=[512,256,128,64]",
            "datamodule.batch_size=64", "trainer.max_epochs=20", "seed=12345"]
    rows = [{"job": job, "status": "completed", "overrides": [*long, f"datamodule.fold={job}"],
             "monitor": "val_loss", "best": 0.25 + job / 100, "duration_s": 61.5,
             "run_dir": str(tmp_path / str(job)), "error": "", "mode": "min"} for job in range(2)]
    print_sweep_summary(rows, tmp_path / "a-long-sweep-dir-name" / "2026-12-03" / "08-00-00")
    out = capsys.readouterr().out  # captured: not a terminal
    table = [line for line in out.splitlines() if line.startswith("│")]
    assert len(table) == 2 and all("completed" in row and "datamodule.fold=" in row for row in table)
    assert "model.optimizer.lr=0.0003" in out and "a-long-sweep-dir-name/2026-12-03/08-00-00" in out
