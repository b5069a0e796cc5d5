"""Where a run's configs come from: the user's config folder first, then dlops' own, shipped in
the package (`dlops/conf`). A user's option of the same name as dlops' (`model/mlp.yaml`) wins,
and `train.yaml` is dlops' unless the user's folder has one.

Hydra searches its `--config-dir` only after the primary config folder, so dlops makes the user's
folder the primary one (`--config-path ABS`) and its Hydra plugin (`hydra_plugins/dlops_configs`)
puts the packaged folder right after it. Light on purpose (pathlib only): `--help` reads it.
"""

import os
from pathlib import Path

# dlops' own config tree, inside the installed package
PACKAGED = Path(__file__).resolve().parent / "conf"
# the flags that name a config folder: Hydra's own spellings, `--config-dir` meaning the user's
DIR_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp")
# whether dlops' folder is searched: set by dlops' entry and by what composes a run's config
# again; other Hydra apps in the same environment never see dlops' options
_searched = False


def search_packaged() -> None:
    """Make Hydra search dlops' own configs after the primary folder (see the module doc)."""
    global _searched
    _searched = True


def packaged_searched() -> bool:
    return _searched


def split_dir_flags(args: list[str]) -> tuple[list[str], str | None]:
    """`args` without the config-folder flags, and the folder the last of them names (or None)."""
    rest, folder, value_next = [], None, False
    for arg in args:
        if value_next:
            folder, value_next = arg, False
            continue
        flag, eq, value = arg.partition("=")
        if flag in DIR_FLAGS:
            if eq:
                folder = value
            else:
                value_next = True
            continue
        rest.append(arg)
    return rest, folder


def user_dir(given: str | os.PathLike | None, cwd: Path | None = None) -> Path | None:
    """The user's config folder: the one given (relative to `cwd`), else `./conf` when the current
    folder has one, else None. Raises NotADirectoryError for a given folder that is not one."""
    cwd = cwd or Path.cwd()
    if given is not None and str(given) != "":
        folder = (cwd / Path(given).expanduser()).resolve()
        if not folder.is_dir():
            raise NotADirectoryError(f"the config folder {given} ({folder}) is not a folder")
        return None if folder == PACKAGED else folder
    local = cwd / "conf"
    return local.resolve() if local.is_dir() and local.resolve() != PACKAGED else None


def search_dirs(primary: Path | None) -> list[Path]:
    """The config folders in the order Hydra searches them."""
    return [primary, PACKAGED] if primary and primary.resolve() != PACKAGED else [PACKAGED]


def primary_from_args(args: list[str]) -> Path | None:
    """The user's folder among Hydra's arguments as dlops' entry wrote them (`--config-path=ABS`)."""
    _, folder = split_dir_flags(args)
    return Path(folder) if folder and Path(folder).resolve() != PACKAGED else None


def recorded_primary(sources: list) -> Path | None:
    """The user's config folder a run was composed with, from `hydra.runtime.config_sources` in its
    `.hydra/hydra.yaml`: the `--config-dir` of a run from before the configs moved into the package,
    else the primary folder unless it is dlops' own (of this or any other install). None when that
    folder is gone or was dlops' own."""
    for provider in ("command-line", "main"):
        for source in sources:
            if source.get("provider") != provider or source.get("schema") != "file":
                continue
            folder = Path(str(source.get("path")))
            if folder.is_dir() and folder.parts[-2:] != ("dlops", "conf"):
                return folder
    return None
