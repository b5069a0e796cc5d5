"""Per-step costs that a run does not need, and the switches that remove them.

Each was found and is measured by `python bench/bench_step.py` (CPU time per training step of a
model whose compute is negligible, so that what remains is framework overhead).
"""

import contextlib
import os
import sys
from typing import Any

from dlops import lightning


def skip_gpu_probes() -> None:
    """Where no GPU is visible, stop torch from looking for one at every optimizer step.

    Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 (CUDA checks that leave forked
    processes free to use CUDA). torch then loads the NVML library on every
    `torch.cuda.is_available()`, which Adam's `step` calls each step: about 0.25 ms, a third of a
    small model's step on a CPU. With no GPU there is nothing for the setting to protect.
    """
    import torch

    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and torch.cuda.device_count() == 0:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


class NoProfiler(lightning.Adaptable):
    """Lightning's default "no profiler", without building a context manager per hook call.

    Lightning wraps each of the ~40 hook calls of a training step in `profiler.profile(name)`;
    the default makes a new generator-based context manager every time.
    """

    lightning_base = "profilers.PassThroughProfiler"

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext:
        return self._nothing


def trainer_speedups(trainer_cfg: Any, callbacks: list) -> tuple[list, dict[str, Any]]:
    """The callbacks to keep and the Trainer arguments to add for a fast run.

    - No profiler object unless one is configured (`trainer.profiler`, e.g. `debug=profile`).
    - A progress bar only on a terminal: in a log file it is a line per refresh that nobody
      reads, and its hooks cost every step. Each epoch still gets a line in the log.
    """
    extra: dict[str, Any] = {}
    if not trainer_cfg.get("profiler"):
        extra["profiler"] = NoProfiler()
    if not sys.stdout.isatty():  # where Lightning's TQDM bars draw
        callbacks = [c for c in callbacks if not isinstance(c, lightning.module("callbacks").ProgressBar)]
        extra["enable_progress_bar"] = False
    return callbacks, extra
