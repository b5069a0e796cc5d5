"""A finished run brought back: its config (plus overrides), its data, its model with a checkpoint's weights.

The model is always built from the run's own config; a checkpoint only gives weights (its
`state_dict`, read with torch's safe loader), so nothing named in a checkpoint is instantiated.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dlops.errors import ConfigError
from dlops.rundir import layout

RUN_CONFIG, RUN_HYDRA, LAST = layout.HYDRA_CONFIG, layout.HYDRA_RUNTIME, layout.LAST_CHECKPOINT


@dataclass
class Restored:
    """What `restore` brings back."""

    run_dir: Path
    cfg: DictConfig
    datamodule: Any  # set up for "fit": the data the model was trained on
    model: Any  # in eval mode, on the CPU, with the checkpoint's weights
    checkpoint: Path
    checkpoint_sha256: str
    epoch: int | None


def check_run_dir(path: str | Path) -> Path:
    """`path` resolved, or ConfigError if it is not a run directory."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        problem = "is not a directory" if run_dir.exists() else "does not exist"
        raise ConfigError(f"{path} {problem}; give a run directory such as outputs/<date>/<time>.")
    if not os.path.lexists(run_dir / RUN_CONFIG):
        raise ConfigError(f"{path} is not a dlops run directory (no .hydra/config.yaml); give a run "
                          "directory such as outputs/<date>/<time> or multirun/<date>/<time>/<job>.")
    return run_dir.resolve()


def read_run_yaml(run_dir: Path, relative: Path) -> dict[str, Any] | None:
    """A YAML file of the run dir as plain data, read as `dlops report` reads it (a regular file
    inside the run dir, capped; no YAML aliases, which could expand to any size); None when absent.
    ConfigError saying what is wrong otherwise."""
    import yaml

    from dlops.rundir.safe_read import MAX_YAML, Unreadable, read_inside

    try:
        data = read_inside(run_dir / relative, run_dir, MAX_YAML)
        if data is None:
            return None
        text = data.decode("utf-8")
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text)):
            raise Unreadable(f"{relative} holds YAML aliases, which dlops never writes")
        node = OmegaConf.to_container(OmegaConf.create(text), resolve=False) if text.strip() else {}
    except Unreadable as exc:
        raise ConfigError(f"{run_dir} cannot be used: {exc}.") from None
    except (UnicodeDecodeError, yaml.YAMLError, ValueError, OmegaConfBaseException) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise ConfigError(f"{run_dir} cannot be used: {relative} is not a YAML mapping ({reason}).") from None
    if not isinstance(node, dict):
        raise ConfigError(f"{run_dir} cannot be used: {relative} is not a YAML mapping.")
    return node


def relative_to_run(path: Path, run_dir: Path) -> str:
    """`path` relative to the run dir when inside it, else absolute."""
    try:
        return str(path.resolve().relative_to(run_dir))
    except ValueError:
        return str(path.resolve())


def find_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """The checkpoint file for `--ckpt best|last|PATH`; best and last never lead out of the run dir."""
    if which not in ("best", "last"):
        path = Path(which)
        if not path.is_file():
            raise ConfigError(f"--ckpt {which}: no such checkpoint file.")
        return path.resolve()
    relative = LAST
    if which == "best":
        best = (run_summary(run_dir) or {}).get("best_checkpoint")
        relative = Path(best) if isinstance(best, str) and best else LAST  # no monitor: last is all there is
    path = (run_dir / relative).resolve()
    inside = path.is_relative_to(run_dir)
    if not (inside and path.is_file()):
        found = sorted(p.name for p in (run_dir / layout.CHECKPOINTS).glob("*.ckpt")) if inside else []
        where = f"{relative} is outside the run dir" if not inside else f"{relative} does not exist"
        raise ConfigError(f"{run_dir} has no {which} checkpoint ({where}; checkpoints/ holds "
                          f"{found or 'nothing'}). Train the run to the end, resume it, or give "
                          "--ckpt last or --ckpt PATH.")
    return path


def run_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary.json, read with `dlops report`'s checks (no FIFO, device or link out,
    capped); None when absent or cut short, ConfigError when it is not to be read."""
    from dlops.readers.discover import read_run_summary
    from dlops.rundir.safe_read import Unreadable

    try:
        return read_run_summary(run_dir)
    except Unreadable as exc:
        raise ConfigError(f"{run_dir} cannot be used: {exc}. Give --ckpt last or --ckpt PATH to "
                          "choose a checkpoint without it.") from None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _runtime(hydra_yaml: dict[str, Any] | None, key: str) -> Any:
    """`hydra.runtime.KEY` of a run's `.hydra/hydra.yaml` (plain data; None where it is not there)."""
    node: Any = hydra_yaml
    for part in ("hydra", "runtime", key):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _config_dir(hydra_yaml: dict[str, Any] | None) -> Path:
    """The config folder the run was composed from: the user's (dlops' own is searched after it),
    else dlops' own."""
    from dlops import configs

    configs.search_packaged()
    sources = _runtime(hydra_yaml, "config_sources")
    sources = [s for s in sources if isinstance(s, dict)] if isinstance(sources, list) else []
    return configs.recorded_primary(sources) or configs.PACKAGED


def group_overrides(overrides: list[str], conf_dir: Path) -> list[str]:
    """The config groups that `overrides` choose an option of (`datamodule=image_folder`: datamodule)."""
    from dlops.configs import search_dirs

    groups = []
    for override in overrides:
        key = override.split("=", 1)[0]
        if "=" in override and key.isidentifier() and any((d / key).is_dir() for d in search_dirs(conf_dir)):
            groups.append(key)
    return groups


def compose_run_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The run's `.hydra/config.yaml` with `overrides` applied by Hydra's compose API.

    Choosing an option of a config group (`datamodule=image_folder`) replaces the run's whole node
    with that option, as it would at training time, instead of merging the option into it. Paths
    that the run's config takes from Hydra (`${hydra:runtime.cwd}`, `...output_dir`) resolve as in
    the run: to the folder training started in and to the run dir. The run dir is data: its files
    are read with `dlops report`'s checks, and a composed config that names code outside the
    trusted packages is refused (`dlops.inference.trust`).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf import open_dict, read_write

    from dlops.inference import trust
    from dlops.lifecycle.resolvers import register_resolvers

    register_resolvers()
    overrides = list(overrides)
    hydra_yaml = read_run_yaml(run_dir, RUN_HYDRA)
    conf_dir = _config_dir(hydra_yaml)
    node = read_run_yaml(run_dir, RUN_CONFIG)
    if node is None:
        raise ConfigError(f"{run_dir} is not a dlops run directory (no .hydra/config.yaml).")
    node.pop("hydra", None)  # a job's config has none; Hydra would read search paths from one
    groups = group_overrides(overrides, conf_dir)
    for group in groups:
        node.pop(group, None)  # the chosen option replaces the run's node
    node["defaults"] = ["_self_", *({group: None} for group in groups)]
    ConfigStore.instance().store(name="dlops_run_config", node=node)
    try:
        with initialize_config_dir(str(conf_dir.resolve()), version_base="1.3", job_name="dlops"):
            cfg = compose("dlops_run_config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"the overrides {' '.join(overrides)} do not apply to the run's config: "
                          f"{' '.join(str(exc).split())}") from None
    start_dir = _runtime(hydra_yaml, "cwd")
    with open_dict(cfg):
        cfg.hydra.runtime.cwd = start_dir if isinstance(start_dir, str) else os.getcwd()
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)  # what `${hydra:...}` reads
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    trust.check(OmegaConf.to_container(cfg, resolve=False), f"{run_dir}/{RUN_CONFIG}"
                + (f" with {' '.join(overrides)}" if overrides else ""))
    return cfg


def load_weights(model: Any, checkpoint: Path) -> int | None:
    """Load the checkpoint's `state_dict` into `model` (safe loader, strict); return its epoch."""
    from dlops.lifecycle.checkpoints import read_checkpoint

    saved = read_checkpoint(checkpoint, training=False)
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as exc:
        raise ConfigError(f"checkpoint {checkpoint} does not fit the run's model: "
                          f"{str(exc).splitlines()[0]}") from None
    return saved.get("epoch")


def restore(run_dir: str | Path, ckpt: str = "best") -> Restored:
    """The run's model with the weights of checkpoint `ckpt` (best, last or a path), on its own data."""
    from dlops.build import build_datamodule, build_model, use_lightning_of

    run_dir = check_run_dir(run_dir)
    checkpoint = find_checkpoint(run_dir, ckpt)
    cfg = compose_run_config(run_dir)
    use_lightning_of(cfg)
    datamodule = build_datamodule(cfg, "fit")
    model = build_model(cfg, datamodule)
    epoch = load_weights(model, checkpoint)
    model.eval()
    return Restored(run_dir, cfg, datamodule, model, checkpoint, sha256(checkpoint), epoch)
