"""Check the composed config before anything heavy runs, and report every problem at once."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dlops.errors import ConfigError

_ABSENT = object()
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_auroc")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# key path -> (check, what a valid value is); keys that the config does not have are skipped
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (_is_int, "an integer"),
    "monitor": (lambda v: v in METRICS, f"one of {', '.join(METRICS)}"),
    "mode": (lambda v: v in ("min", "max"), "'min' or 'max'"),
    "datamodule.batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "datamodule.val_fraction": (lambda v: _is_number(v) and 0 < v < 1, "a number between 0 and 1"),
    "datamodule.test_fraction": (lambda v: _is_number(v) and 0 < v < 1, "a number between 0 and 1"),
    "trainer.max_epochs": (lambda v: _is_int(v) and (v >= 1 or v == -1), "an integer >= 1 (or -1: no limit)"),
    "trainer.min_epochs": (lambda v: v is None or (_is_int(v) and v >= 0), "an integer >= 0"),
    "model.optimizer.lr": (lambda v: _is_number(v) and v > 0, "a number > 0"),
}


def config_problems(cfg: DictConfig) -> list[str]:
    """Every problem found in `cfg`, one readable line each (empty when the config is fine)."""
    problems = []
    for key, (check, expected) in RULES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
        if value is _ABSENT:
            continue
        if not check(value):
            problems.append(f"{key} must be {expected}, got {value!r}")
    data = cfg.get("datamodule") or {}
    fractions = [data.get(k) for k in ("val_fraction", "test_fraction")]
    if all(_is_number(f) for f in fractions) and sum(fractions) >= 1:
        problems.append("datamodule.val_fraction + datamodule.test_fraction must be below 1, "
                        f"got {sum(fractions):g}")
    if "root" in data:
        if OmegaConf.is_missing(cfg.datamodule, "root"):
            problems.append("datamodule.root is not set: add datamodule.root=DIR "
                            "(a folder with train/ and test/)")
        elif not Path(str(data.root)).is_dir():
            problems.append(f"datamodule.root {data.root} is not a folder")
    return problems


def validate(cfg: DictConfig) -> None:
    """Raise one ConfigError listing every problem in `cfg`."""
    problems = config_problems(cfg)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"the config has {len(problems)} problem(s):\n{lines}\n"
                          "Fix them on the command line (key=value) or in conf/.")
