"""What a checkpoint's hyperparameters may name: a checkpoint is data, never code.

`Classifier.__init__` instantiates `net`, and `configure_optimizers` the `optimizer` and
`scheduler`, from its hyperparameters; `load_from_checkpoint` takes those from the file. A file
can name any importable callable there (Hydra instantiates nested `_target_`s first, so a chain
of harmless-looking calls can write files and run commands), so every `_target_` in them is
checked against this list before anything is called.
"""

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dlops.errors import ConfigError

NETS = {"dlops.models.nets.MLP", "dlops.models.nets.CNN"}
HOW_TO_TRUST = ("If you trust this file and the net is your own, rebuild it from your config "
                "instead: Classifier.load_from_checkpoint(path, weights_only=True, net=cfg.model.net).")


def _torch_class(target: str, module: str, base_names: tuple[str, ...]) -> bool:
    """Whether `target` is `module.<Name>`, a class defined there derived from one of `base_names`."""
    import importlib

    prefix, _, name = target.rpartition(".")
    if prefix != module or not name.isidentifier() or name.startswith("_"):
        return False
    value = getattr(importlib.import_module(module), name, None)  # an attribute, nothing is called
    return isinstance(value, type) and any(b.__name__ in base_names for b in value.__mro__)


def allowed(role: str, target: Any) -> bool:
    """Whether `target` may be instantiated as the model's `role` (net, optimizer, scheduler)."""
    if not isinstance(target, str):
        return False
    if role == "net":
        return target in NETS
    if role == "optimizer":
        return _torch_class(target, "torch.optim", ("Optimizer",))
    if role == "scheduler":
        return _torch_class(target, "torch.optim.lr_scheduler", ("LRScheduler", "ReduceLROnPlateau"))
    return False


def _targets(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """(key path, value) of every `_target_` and every `${...}` string inside `value`."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if key == "_target_":
                yield path, item
            else:
                yield from _targets(item, path)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _targets(item, f"{where}[{i}]")
    elif isinstance(value, str) and "${" in value:  # an interpolation calls a resolver
        yield where, value


def check_hyperparameters(hparams: Mapping[str, Any], source: str) -> None:
    """Raise ConfigError naming the first `_target_` (or `${...}`) in `hparams` that is not allowed."""
    for path, target in _targets(hparams, ""):
        role = path.split(".", 1)[0]
        if path != f"{role}._target_" or not allowed(role, target):
            raise ConfigError(
                f"{source} names {target!r} at {path}, which dlops does not load from a checkpoint "
                f"(allowed: {', '.join(sorted(NETS))} as net, torch.optim classes as optimizer, "
                f"torch.optim.lr_scheduler classes as scheduler; nothing nested). Nothing was "
                f"called. {HOW_TO_TRUST}")


def peek_hyperparameters(checkpoint: Any) -> dict[str, Any]:
    """The `hyper_parameters` of a checkpoint file (path or open file), read with torch's safe loader."""
    import torch

    if isinstance(checkpoint, str | Path) and Path(checkpoint).exists() and not Path(checkpoint).is_file():
        raise ConfigError(f"checkpoint {checkpoint} is not a regular file (a folder, a device or a FIFO).")
    position = checkpoint.tell() if hasattr(checkpoint, "seek") else None
    try:
        data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"checkpoint {checkpoint} does not exist.") from None
    except Exception as exc:  # pickled objects, garbage bytes: nothing of it is used
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"checkpoint {checkpoint} cannot be loaded safely ({reason}).") from None
    finally:
        if position is not None:
            checkpoint.seek(position)
    hparams = data.get("hyper_parameters") if isinstance(data, dict) else None
    return hparams if isinstance(hparams, dict) else {}
