"""Distributed runs keep the run-directory contract: one directory, written by rank 0 only.

With `strategy: ddp` Lightning starts ranks > 0 on this machine by running the command again
(`python train.py|bin/dlops train|main.py <this process's arguments> hydra.run.dir=<hydra.run.dir> ...`,
`python -m dlops.__main__ train ...`). Inside a sweep
that command would start the whole sweep again (`-m`) in a new directory, so before the fit the
arguments become this job's own overrides and `hydra.run.dir` this job's run dir. On SLURM
(`hydra/launcher=submitit_slurm` with `tasks_per_node` = devices) SLURM starts every rank and
Lightning starts none.
"""

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, read_write

from dlops.errors import ConfigError, Interrupted
from dlops.lifecycle.argv import ENTRY, config_flags

log = logging.getLogger(__name__)
# set by torchrun, by Lightning for the processes it starts, and by srun
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
# what Lightning sets in the environment of the process that starts the ranks
DDP_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE",
                 "OMP_NUM_THREADS")


def is_rank_zero() -> bool:
    """Whether this process is rank 0 of a distributed run, or not distributed at all."""
    return all(os.environ.get(name, "0") == "0" for name in RANK_VARIABLES)


def prepare_relaunch(trainer: Any, run_dir: Path) -> None:
    """Make the ranks > 0 that Lightning will start for `trainer` run this one job in `run_dir`."""
    strategy = trainer.strategy
    if (type(strategy.launcher).__name__ != "_SubprocessScriptLauncher"
            or strategy.cluster_environment.creates_processes_externally
            or not HydraConfig.initialized()):
        return
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN and not hydra.launcher._target_.endswith("BasicLauncher"):
        raise ConfigError(
            "trainer.strategy=ddp starts ranks > 0 by running train.py again, which works with the "
            "default launcher only: sweep DDP jobs with it, or on SLURM with hydra/launcher="
            "submitit_slurm and hydra.launcher.tasks_per_node=<trainer.devices>, so that SLURM "
            "starts every rank.")
    with read_write(hydra):
        hydra.run.dir = str(run_dir)
    # ranks > 0 log to the console only: the run dir's train.log is rank 0's
    sys.argv[1:] = [*ENTRY, *config_flags(sys.argv[1:]), *hydra.overrides.task, "hydra/job_logging=stdout"]


@contextmanager
def clean_process_state() -> Iterator[None]:
    """Give the process back as the job found it, so the next job of a sweep starts clean.

    A DDP fit leaves a process group, `MASTER_PORT`, `LOCAL_RANK`, ... in the environment and
    fewer torch threads; the next job would take them for its own.
    """
    import torch

    environ = {name: os.environ.get(name) for name in DDP_VARIABLES}
    argv, threads = list(sys.argv), torch.get_num_threads()
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        sys.argv[:] = argv
        torch.set_num_threads(threads)


def train_other_rank(cfg: DictConfig, run_dir: Path) -> None:
    """A DDP rank > 0: fit beside rank 0, from the same checkpoint when resuming; rank 0 records.
    Ranks that SLURM or torchrun start all decide at once: a run that rank 0 will not train (a bad
    config, a completed or diverged run resumed) ends here too, as rank 0 starts no process group."""
    from dlops.lifecycle.failures import user_message
    from dlops.pipeline import fit_and_test, start_summary
    from dlops.validate import validate

    checkpoint = None
    if cfg.get("resume"):
        from dlops.lifecycle.resume import nothing_to_train, resumed_config

        cfg, checkpoint = resumed_config(cfg, run_dir)
        if nothing_to_train(cfg, run_dir):  # e.g. a completed job of `-m resume=SWEEP`: rank 0 says so
            return None
    try:
        validate(cfg)  # what rank 0 refuses, this rank does too, rather than wait for it to join
        fit_and_test(cfg, run_dir, start_summary(cfg, run_dir), checkpoint)
    except Interrupted:
        return None  # every rank stopped at the same batch; rank 0 says so
    except BaseException as exc:  # noqa: BLE001
        if user_message(exc) is None:
            raise  # unexpected, maybe in this rank only: Lightning then stops every rank
        log.error("rank > 0 stopped, rank 0 records why: %s", user_message(exc))
    return None  # exit 0, or Lightning would kill rank 0 before it records the run


def all_gather(tensor: Any) -> Any:
    """Every process's `tensor` (the same shape on each), concatenated in rank order, through
    torch.distributed's own collective: Lightning's `all_gather` calls one that torch deprecates,
    with a warning each time."""
    import torch
    import torch.distributed as dist

    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)
