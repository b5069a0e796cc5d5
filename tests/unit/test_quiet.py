"""What a run prints, set where it starts: Lightning's logging interval, the exporter's loggers,
where profiler reports went, how long a resumed run took (in-process, a few tiny fits)."""

import csv
import logging
import warnings

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.profilers import SimpleProfiler
from torch.utils.data import DataLoader, TensorDataset

from dlops.lifecycle.outcome import took
from dlops.pipeline import log_profile_reports
from dlops.quiet import CHATTY_LOGGERS, log_interval_within_epoch, quiet_run


class Points(pl.LightningDataModule):
    """24 points: 3 training batches of 8."""

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(24, 3), torch.randn(24)), batch_size=8)

    def test_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 3), torch.randn(8)), batch_size=8)


class Linear(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.mse_loss(self.layer(batch[0]).squeeze(-1), batch[1])
        self.log("train/loss", loss)  # on_step, as Lightning logs it from training_step
        return loss

    def test_step(self, batch, batch_idx):
        self.log("test/loss", torch.nn.functional.mse_loss(self.layer(batch[0]).squeeze(-1), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def trainer(tmp_path, **kwargs) -> pl.Trainer:
    return pl.Trainer(max_epochs=2, logger=CSVLogger(tmp_path, name="", version=""),
                      default_root_dir=tmp_path, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, **kwargs)


def test_an_epoch_shorter_than_the_logging_interval_lowers_it_and_lightning_does_not_warn(tmp_path):
    data = Points()
    log_interval_within_epoch(data)
    fit = trainer(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit.fit(Linear(), datamodule=data)
    assert [str(w.message) for w in caught if "log_every_n_steps" in str(w.message)] == []
    assert fit.log_every_n_steps == 3  # the epoch's batches, not Lightning's 50
    with open(tmp_path / "metrics.csv") as file:
        logged = [row for row in csv.DictReader(file) if row.get("train/loss")]
    assert len(logged) == 2  # the training steps are logged once an epoch (never, at 50)

    limited = trainer(tmp_path / "limited", limit_train_batches=1)
    data = Points()
    log_interval_within_epoch(data)
    limited.fit(Linear(), datamodule=data)
    assert limited.log_every_n_steps == 1  # debug=fast: one batch an epoch


def test_the_exporters_narration_is_quiet_unless_verbose():
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    quiet_run(verbose=True)
    assert [logging.getLogger(name).level for name in CHATTY_LOGGERS] == [logging.NOTSET] * 2
    quiet_run()
    assert [logging.getLogger(name).level for name in CHATTY_LOGGERS] == [logging.WARNING] * 2
    assert not logging.getLogger("onnx_ir.passes").isEnabledFor(logging.INFO)


def test_the_log_says_where_the_profiler_wrote_its_reports(tmp_path, caplog):
    fit, data = trainer(tmp_path, profiler=SimpleProfiler(dirpath=tmp_path, filename="profile")), Points()
    log_interval_within_epoch(data)
    fit.fit(Linear(), datamodule=data)
    fit.test(Linear(), datamodule=Points(), verbose=False)
    with caplog.at_level(logging.INFO, logger="dlops.pipeline"):
        log_profile_reports(fit.profiler, tmp_path)
    assert "profiler reports: fit-profile.txt, test-profile.txt" in caplog.text


def test_a_resumed_run_says_how_long_this_attempt_took_then_all_of_them():
    assert took({"duration_s": 6.84}) == "6.8s"
    resumed = {"duration_s": 138.8, "attempts": [{"duration_s": 50.0}, {"duration_s": 28.8}, {}]}
    assert took(resumed) == "60.0s (138.8s in 3 attempts)"
