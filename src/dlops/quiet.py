"""What a run prints: dlops' lines, Lightning's progress, and the warnings that ask something of
the user. Third-party lines that ask nothing are silenced where they start (a logger's level, a
Trainer setting, one named message), never by hiding a category of warnings wholesale; the run's
`verbose=true` shows them all.

Silenced: the ONNX exporter's account of its passes (~13 INFO lines an `export=onnx`), Lightning's
"fewer training batches than log_every_n_steps" (every `debug=fast`, `overfit` or small-data run),
its cloud-logging advert, a deprecation inside Lightning itself and, where SLURM is installed, its
hint to start the run with `srun` (dlops submits through hydra/launcher=submitit_slurm).
"""

import logging
import sys
import warnings
from typing import Any

from dlops import lightning

# libraries whose INFO lines narrate their own work ("Removed 8 unused nodes", ...)
CHATTY_LOGGERS = ("onnx_ir", "onnxscript")


def _not_an_advert(record: logging.LogRecord) -> bool:
    return "Tip: For seamless cloud logging" not in record.getMessage()


def quiet_run(verbose: bool = False) -> None:
    """Set what a run prints; call it once the run's Lightning package is chosen (see
    dlops.lightning). Each Lightning line prints once, verbose or not: `import lightning` gives
    its logger a console handler of its own, beside the run's logging (console and train.log)."""
    lightning.module()  # imported now, so that its logging set-up is undone below
    if "lightning" in sys.modules:
        console = logging.getLogger("lightning")
        for handler in [h for h in console.handlers if type(h) is logging.StreamHandler]:
            console.removeHandler(handler)
    if verbose:
        return
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for package in lightning.PACKAGES:  # added once: a filter object is kept only once
        logging.getLogger(f"{package}.utilities.rank_zero").addFilter(_not_an_advert)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")


def log_interval_within_epoch(datamodule: Any) -> None:
    """Log training steps at least once an epoch: when an epoch has fewer training batches than
    the Trainer's `log_every_n_steps` (Lightning's default 50), lower it to that number, as
    Lightning's warning about it asks. Set as Lightning asks the datamodule for the training
    loader, the moment the number is known (per process under DDP); for a run whose config does
    not set `trainer.log_every_n_steps` itself."""
    make = datamodule.train_dataloader

    def train_dataloader() -> Any:
        loader = make()
        trainer = datamodule.trainer
        try:
            batches = len(loader)
        except TypeError:  # an iterable without a length: Lightning cannot count it either
            return loader
        limit = trainer.limit_train_batches
        batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
        if 0 < batches < trainer.log_every_n_steps:
            trainer.log_every_n_steps = batches
        return loader

    datamodule.train_dataloader = train_dataloader
