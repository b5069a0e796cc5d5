"""What a checkpoint's hyperparameters may name: a checkpoint is data, never code.

`Classifier.__init__` instantiates `net`, and `configure_optimizers` the `optimizer` and
`scheduler`, from its hyperparameters; `load_from_checkpoint` takes those from the file, under
every key Lightning reads them from (`saved_hyperparameters`). A file
can name any importable callable there (Hydra instantiates nested `_target_`s first, so a chain
of harmless-looking calls can write files and run commands), so every `_target_` in them is
checked against this list before anything is called.
"""

from collections.abc import Iterator, Mapping
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


def saved_hyperparameters(checkpoint: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """Every hyperparameter Lightning's loader would pass to `cls` from `checkpoint`: under the
    legacy keys (Lightning's own `CHECKPOINT_PAST_HPARAMS_KEYS`, read from the installed package)
    and today's key, merged in that order."""
    import importlib

    from dlops import lightning

    concrete = lightning.concrete(cls)
    saving = importlib.import_module(f"{lightning.package_of(concrete)}.core.saving")
    merged: dict[str, Any] = {}
    for key in (*saving.CHECKPOINT_PAST_HPARAMS_KEYS, concrete.CHECKPOINT_HYPER_PARAMS_KEY):
        value = checkpoint.get(key)
        if isinstance(value, Mapping):
            merged.update(value)
        elif value is not None:
            raise ConfigError(f"the checkpoint's {key} is a {type(value).__name__}, not a mapping of "
                              "hyperparameters; dlops does not load it.")
    return merged
