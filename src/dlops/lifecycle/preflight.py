"""Before a run or a sweep creates anything: stop with one message when the composed config
chooses a feature whose extra is not installed (logger=mlflow, hparams_search=..., export=onnx,
experiment=diabetes, ...), or names a class in a module that cannot be found from here (a
`mine.Points` of yours, started from another folder). A Hydra callback (`hydra.callbacks.extras`
in conf/hydra/default.yaml)."""

import importlib.util
import os
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dlops import extras
from dlops.signatures import imported_packages

# dlops' own modules, whose imports tell which extra they need
OWN = ("dlops.", "hydra_plugins.dlops_")


def targets(node: Any, path: str = "") -> list[tuple[str, str]]:
    """`(key path, _target_)` of every node of a plain config tree that names one."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            found.append((path, node["_target_"]))
        for key, value in node.items():
            found += targets(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += targets(value, f"{path}[{index}]")
    return found


def needs(cfg: DictConfig) -> dict[str, str]:
    """{feature: extra} for the features of `cfg` that need an extra."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    hydra = tree.pop("hydra", None) or {}
    found = targets(tree) + targets({f"hydra.{k}": hydra.get(k) for k in ("sweeper", "launcher")})
    by_extra = {}  # the first feature that needs each extra
    if tree.get("export"):
        by_extra["export"] = f"export={(tree['export'] or {}).get('format', 'onnx')}"
    for path, target in found:
        module = target.rpartition(".")[0]
        packages = {module.split(".")[0], *(imported_packages(module) if target.startswith(OWN) else ())}
        for package in sorted(packages):
            if extra := extras.extra_of(package):
                by_extra.setdefault(extra, f"{path} ({target})")
    return {feature: extra for extra, feature in by_extra.items()}


class CheckExtras(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _stop_if_missing(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _stop_if_missing(config)


def unfound_modules(cfg: DictConfig) -> list[tuple[str, str]]:
    """`(key path, _target_)` of each `_target_` whose top-level module cannot be found on this
    process's import path (found without importing anything). Extras are `needs`' to name."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    tree.pop("hydra", None)
    unfound = []
    for path, target in targets(tree):
        top = target.split(".")[0]
        if "${" not in target and "." in target and not extras.extra_of(top) \
                and importlib.util.find_spec(top) is None:
            unfound.append((path, target))
    return unfound


def _stop_if_missing(config: DictConfig) -> None:
    from dlops.lifecycle.argv import COMMAND

    if text := extras.message(needs(config)):
        raise SystemExit(f"{COMMAND}: error: {text}")
    if unfound := unfound_modules(config):
        path, target = unfound[0]
        module = target.split(".")[0]
        here = os.getcwd()
        searched = f"the current folder {here}" if {"", here} & set(sys.path) else sys.path[0]
        start = f"start {COMMAND} from the folder that holds {module}.py (or its package {module}/), " \
            if {"", here} & set(sys.path) else ""
        raise SystemExit(
            f"{COMMAND}: error: {path}._target_ is {target}, but no module named {module} can be "
            f"imported here (searched {searched}, PYTHONPATH and the installed packages): {start}"
            f"install its package, or add its folder to PYTHONPATH. Nothing was written.")
