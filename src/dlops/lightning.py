"""Which Lightning a run uses: `lightning` (`import lightning as L`, i.e. `lightning.pytorch`) or
`pytorch_lightning`, decided once per run from the user's classes.

The two packages hold the same code but separate classes: a `lightning.pytorch` Trainer refuses a
`pytorch_lightning` LightningModule and overlooks its callbacks. So everything dlops hands the
Trainer comes from the package of the user's model and datamodule:

- Lightning's own classes named in configs (`_target_: lightning.pytorch.Trainer`, callbacks,
  profilers, loggers) are instantiated from the run's package (`for_run`);
- dlops' own Lightning classes (callbacks, loggers, checkpoint I/O, the bundled Classifier and
  datamodules) derive from `Adaptable`: written once, each instance is made of the run's package.

A run whose classes are all dlops' own uses `lightning.pytorch`.
"""

import functools
import importlib
import types
from typing import Any, ClassVar

from dlops.errors import ConfigError

PACKAGES = ("lightning.pytorch", "pytorch_lightning")
# the modules each package's classes come from (checkpoint I/O comes from the fabric beside it)
MODULES = {"lightning.pytorch": ("lightning.pytorch", "lightning.fabric"),
           "pytorch_lightning": ("pytorch_lightning", "lightning_fabric")}
DEFAULT = "lightning.pytorch"
IMPORT_STYLE = {"lightning.pytorch": "import lightning as L",
                "pytorch_lightning": "import pytorch_lightning as pl"}
_current = DEFAULT


def package_of(cls: type) -> str | None:
    """The Lightning package `cls` derives from (`lightning.pytorch` or `pytorch_lightning`), or None."""
    for base in cls.__mro__:
        for package, modules in MODULES.items():
            if any(base.__module__ == m or base.__module__.startswith(m + ".") for m in modules):
                return package
    return None


def current() -> str:
    """The package of the current run (see `choose`)."""
    return _current


def use(package: str) -> None:
    """Make `package` (`lightning.pytorch` or `pytorch_lightning`) the current one: what dlops'
    own classes are made of from now on in this process (the pipeline calls `choose` instead)."""
    global _current
    if package not in PACKAGES:
        raise ConfigError(f"no Lightning package {package!r}; use one of {', '.join(PACKAGES)}")
    _current = package


def module(name: str = "") -> Any:
    """A module of the current run's package: `module("callbacks")` is `lightning.pytorch.callbacks`."""
    return importlib.import_module(f"{_current}.{name}" if name else _current)


def attribute(package: str, path: str) -> Any:
    """`path` (e.g. `callbacks.Checkpoint`) inside `package`."""
    where, _, name = path.rpartition(".")
    return getattr(importlib.import_module(f"{package}.{where}" if where else package), name)


class Adaptable:
    """A dlops class with a Lightning base class from the run's package.

    `lightning_base` names the base inside the package (e.g. `callbacks.Checkpoint`); creating an
    instance makes it of a subclass of this class and that base (`made_of`), so `isinstance`
    against the dlops class, `super()` and Lightning's own checks all work. (A subclass that
    leaves `lightning_base` unset is a plain class.)
    """

    lightning_base: ClassVar[str | None] = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return super().__new__(concrete(cls))


@functools.cache
def made_of(cls: type, package: str) -> type:
    """`cls` (an `Adaptable`) with its Lightning base taken from `package`."""
    base = attribute(package, cls.lightning_base)
    return types.new_class(cls.__name__, (cls, base), exec_body=lambda namespace: namespace.update(
        __module__=cls.__module__, __qualname__=cls.__qualname__, __doc__=cls.__doc__, made_from=cls))


def defining_class(cls: type) -> type:
    """The class as its module defines it: for a class `made_of` a package, the dlops class."""
    return cls.__dict__.get("made_from", cls)


def concrete(cls: type) -> type:
    """The class instances of `cls` get in this run (itself unless it is a bare `Adaptable`)."""
    adapts = issubclass(cls, Adaptable) and cls.lightning_base and package_of(cls) is None
    return made_of(cls, _current) if adapts else cls


def _located(target: Any) -> Any:
    from hydra.utils import get_object

    try:
        return get_object(str(target))
    except Exception:  # noqa: BLE001 - instantiating it will say what is wrong, in Hydra's words
        return None


def choose(cfg: Any) -> str:
    """Decide the run's package from the classes `datamodule._target_` and `model._target_` name,
    make it current and return it. A pair from different packages is refused with one message."""
    found = {}
    for node in ("datamodule", "model"):
        target = (cfg.get(node) or {}).get("_target_")
        located = _located(target) if target else None
        ours = not isinstance(located, type) or issubclass(located, Adaptable)
        if not ours and (package := package_of(located)):
            found[node] = (package, target)
    packages = {package for package, _ in found.values()}
    if len(packages) > 1:
        raise ConfigError(mixed_message(found))
    use(packages.pop() if packages else DEFAULT)
    return _current


def mixed_message(found: dict[str, tuple[str, str]]) -> str:
    """Say which class comes from which Lightning package."""
    parts = [f"{node}._target_ {target} is a {package} class ({IMPORT_STYLE[package]})"
             for node, (package, target) in found.items()]
    return ("; ".join(parts) + ". One run uses one Lightning package: import the same one in both "
            "modules (`import lightning as L` is what Lightning's docs use since 2.0).")


def check_instance(obj: Any, node: str, kind: str) -> None:
    """Raise ConfigError unless `obj` (built from `node`) is a `kind` (e.g. LightningModule) of the
    run's package."""
    if isinstance(obj, attribute(_current, kind)):
        return
    target = f"{node}._target_"
    package = package_of(type(obj))
    if package and package != _current:
        raise ConfigError(f"{target} made a {package} {kind} ({IMPORT_STYLE[package]}), but this run "
                          f"uses {_current} ({IMPORT_STYLE[_current]}), chosen from the other class. "
                          "Import the same Lightning package in your model and datamodule modules.")
    raise ConfigError(f"{target} made a {type(obj).__name__}, not a {kind}.")


def for_run(node: Any) -> Any:
    """`node` (a config node, changed in place) with its Lightning `_target_`s, at any depth,
    naming the run's package: `pytorch_lightning.X` and `lightning.pytorch.X` both become X of it."""
    from omegaconf import OmegaConf

    if OmegaConf.is_dict(node):
        target = node.get("_target_") if "_target_" in node else None
        for package in PACKAGES:
            if isinstance(target, str) and target.startswith(package + "."):
                node._target_ = _current + target[len(package):]
        for _, value in node.items_ex(resolve=False):
            for_run(value)
    elif OmegaConf.is_list(node):
        for index in range(len(node)):
            for_run(node[index])
    return node
