"""Training, as `dlops train`, `python train.py` and `dlops.main()` all start it.

Before Hydra reads the command line: dlops' help page (`--help`, no Hydra or torch import), the
user's config folder made the primary one with dlops' own searched after it (dlops.configs),
Trainer arguments without `+` (dlops.lifecycle.trainer_args), and `resume=`
(dlops.lifecycle.resume). Torch and Lightning load inside the task, so `--cfg job` answers at once.
"""

import sys
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from dlops import configs

if TYPE_CHECKING:
    from omegaconf import DictConfig

HELP_FLAGS = ("--help", "-h")


def main(argv: Sequence[str] | None = None, config_dir: str | PathLike | None = None) -> None:
    """Train from the composed config, as `dlops train` does: `dlops.main()` in a script of yours
    reads its command line (`python main.py model=cnn trainer.max_epochs=5`); `config_dir` is your
    config folder, searched before dlops' own (`--config-dir DIR` on the command line wins over it;
    without either, `./conf` when the current folder has one). Exits (SystemExit) with the run's
    exit code when the run fails. DDP ranks > 0 are started by running your script again."""
    run(list(sys.argv[1:] if argv is None else argv), config_dir)


def run(args: list[str], config_dir: str | PathLike | None = None, entry: Sequence[str] = ()) -> None:
    """Train with Hydra's arguments `args`; `entry` is what comes between the program and them on
    the command line (`["train"]` for `dlops train`), which DDP ranks > 0 are started with again."""
    args, given = configs.split_dir_flags(args)
    program = Path(sys.argv[0]).name
    name = " ".join(["dlops" if program == "dlops" else "python -m dlops", *entry]) if entry \
        else f"python {program}"
    try:
        primary = configs.user_dir(given if given is not None else config_dir)
    except NotADirectoryError as exc:
        raise SystemExit(f"{name}: error: {exc}; give --config-dir a folder of yours with config "
                         "groups in it (model/, datamodule/, ...).") from None
    if any(arg in HELP_FLAGS for arg in args):
        from dlops.train_help import help_page

        print(help_page(configs.search_dirs(primary), name))
        return
    import hydra

    from dlops.lifecycle import argv as command_line
    from dlops.lifecycle.resolvers import register_resolvers, show_placeholders
    from dlops.lifecycle.resume import hydra_argv
    from dlops.lifecycle.trainer_args import without_plus

    configs.search_packaged()
    register_resolvers()
    if any(arg.split("=", 1)[0] in ("--cfg", "-c") for arg in args):
        show_placeholders()  # `--cfg job --resolve`: the data's facts are known only in a run
    share_config_store()
    command_line.ENTRY[:], command_line.COMMAND = entry, name
    try:
        args = without_plus(args, configs.search_dirs(primary))
    except ValueError as exc:
        raise SystemExit(f"{name}: error: {exc}") from None
    sys.argv = hydra_argv([sys.argv[0], f"--config-path={primary or configs.PACKAGED}", *args])
    hydra.main(version_base="1.3", config_path=str(configs.PACKAGED), config_name="train")(task)()


def share_config_store() -> None:
    """Hydra deep-copies its config repository, with the store of every plugin's schemas, once per
    config group (~0.8 s to complete a command line). The store hands out only copies of what it
    holds: share it instead."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.__deepcopy__ = lambda self, memo: self


def task(cfg: "DictConfig") -> float | None:
    """One run (or one job of a sweep) of the composed config."""
    from dlops.lifecycle.resolvers import register_resolvers
    from dlops.pipeline import train

    register_resolvers()  # a launcher's worker process may start here
    return train(cfg)
