"""The best checkpoints by `monitor`: Lightning's ModelCheckpoint, with file names that stay flat."""

import os
from typing import Any

from dlops.lightning import Adaptable
from dlops.rundir.metrics import file_safe


class ModelCheckpoint(Adaptable):
    """Lightning's ModelCheckpoint, except that a metric name with a slash (`val/acc`, as many
    models log it) never makes a folder: Lightning would write `epoch=1-val/acc=0.98.ckpt` into a
    folder `epoch=1-val/`; this writes `epoch=1-val_acc=0.98.ckpt`."""

    lightning_base = "callbacks.ModelCheckpoint"

    def format_checkpoint_name(self, metrics: dict[str, Any], *args: Any, **kwargs: Any) -> str:
        path = super().format_checkpoint_name(metrics, *args, **kwargs)
        if not self.dirpath:
            return file_safe(path)
        return os.path.join(self.dirpath, file_safe(os.path.relpath(path, self.dirpath)))
