"""OmegaConf resolvers used by the config tree (light: no torch here)."""

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dlops.errors import ConfigError
from dlops.lifecycle.argv import cannot_create
from dlops.rundir import dirs

# the datamodule that `${data:NAME}` reads: set by dlops.build once it is set up
_datamodule: Any = None
# whether `${data:NAME}` without a datamodule reads as a placeholder: only while a config is
# printed (`--cfg job --resolve`), never in a run, where a value must be real
_placeholders = False


def unique_dir(path: str) -> str:
    """`${dlops.unique_dir:PATH}`: create and return `path`, or `path-2`, `path-3`, ... if it exists
    already (see `dlops.rundir.dirs`); a directory that cannot be made is one message."""
    try:
        return str(dirs.make_unique(path))
    except OSError as exc:
        raise SystemExit(cannot_create(path, exc)) from None  # one message, not Hydra's traceback


def hydra_subdir(run_dir: str, name: str = ".hydra") -> str | None:
    """`name`, or None (Hydra then writes nothing) when `run_dir/name` already holds a run's config
    or this process is a distributed rank other than 0.

    So `resume=`, which makes Hydra work in an existing run dir, keeps the config the run started with.
    Ranks > 0 always get None: Hydra resolves this twice per job, and a rank that read "no config
    yet" and then None (rank 0 had written it in between) crashed in Hydra's `run_job` (1 run in 9
    of a 2-task SLURM job); the run's files are rank 0's anyway.
    """
    from dlops.lifecycle.ddp import is_rank_zero

    if not is_rank_zero() or (Path(run_dir) / name / "config.yaml").exists():
        return None
    return name


def set_datamodule(datamodule: Any) -> None:
    """Make `datamodule` the one that `${data:NAME}` reads."""
    global _datamodule
    _datamodule = datamodule


def show_placeholders() -> None:
    """Print `${data:NAME}` as `<NAME from the datamodule>` when no datamodule is set up."""
    global _placeholders
    _placeholders = True


def data_fact(name: str) -> Any:
    """`${data:NAME}`: the attribute NAME of the run's datamodule, as plain values (lists, numbers)."""
    if _datamodule is None and _placeholders:
        return f"<{name} from the datamodule>"
    if _datamodule is None:
        raise ConfigError(f"${{data:{name}}} is known only while a run builds its model, once the "
                          "datamodule is set up; --cfg job shows it unresolved.")
    try:
        value = getattr(_datamodule, name)
    except AttributeError as exc:
        raise ConfigError(
            f"the config asks for ${{data:{name}}}, but {type(_datamodule).__name__} has no "
            f"attribute {name!r} ({exc}); add it to the datamodule (a property is fine) or write the "
            "value into the config instead.") from None
    return _plain(value)


def _plain(value: Any) -> Any:
    """Tensors, arrays, tuples and numpy numbers as the lists and numbers OmegaConf holds."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def register_resolvers() -> None:
    """Register `${dlops.unique_dir:...}` (cached: a config resolves it once),
    `${dlops.hydra_subdir:...}` and `${data:NAME}` (see `data_fact`)."""
    if not OmegaConf.has_resolver("data"):
        OmegaConf.register_new_resolver("data", data_fact)
    if not OmegaConf.has_resolver("dlops.unique_dir"):
        OmegaConf.register_new_resolver("dlops.unique_dir", unique_dir, use_cache=True)
    if not OmegaConf.has_resolver("dlops.hydra_subdir"):
        OmegaConf.register_new_resolver("dlops.hydra_subdir", hydra_subdir)
