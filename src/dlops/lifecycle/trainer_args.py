"""Every argument of Lightning's `Trainer` on the command line as `trainer.NAME=VALUE`, without
Hydra's `+`. One that some trainer option does not set is handed to Hydra as
`++trainer.NAME=VALUE` ("set, adding the key if it is new"), which is what the run records; one
that every trainer option sets (`trainer.max_epochs`) stays as typed. A misspelt name is stopped
with the name meant."""

import difflib
from pathlib import Path

import yaml

from dlops.rundir.overrides import is_override
from dlops.signatures import trainer_parameters


def set_by_every_option(conf_dirs: list[Path]) -> set[str]:
    """The keys that every `trainer/` option of `conf_dirs` sets, itself or through the options its
    defaults list includes (an earlier folder's option replaces a later one's of the same name)."""
    files = {}
    for folder in reversed(conf_dirs):
        files.update({path.stem: path for path in sorted((folder / "trainer").glob("*.yaml"))})

    def keys(name: str, seen: tuple[str, ...] = ()) -> set[str]:
        if name not in files or name in seen:
            return set()
        node = yaml.safe_load(files[name].read_text(encoding="utf-8")) or {}
        found = {key for key in node if key != "defaults"}
        for entry in node.get("defaults") or []:
            if isinstance(entry, str) and entry != "_self_":
                found |= keys(entry, (*seen, name))
        return found

    every = [keys(name) for name in files]
    return set.intersection(*every) if every else set()


def without_plus(args: list[str], conf_dirs: list[Path]) -> list[str]:
    """`args` with each `trainer.NAME=VALUE` of a Trainer argument NAME that not every trainer
    option of `conf_dirs` sets written `++trainer.NAME=VALUE`. Raises ValueError for a NAME that is
    no Trainer argument but close to one (`max_epoch`: did you mean max_epochs?)."""
    if not any(is_override(a) and a.startswith("trainer.") for a in args):
        return args  # nothing to read the Trainer's arguments for
    names, present = trainer_parameters(), set_by_every_option(conf_dirs)
    fixed = []
    for arg in args:
        key = arg.split("=", 1)[0]
        parts = key.split(".")
        if is_override(arg) and len(parts) == 2 and parts[0] == "trainer" and names:
            if parts[1] in names and parts[1] not in present:
                arg = "++" + arg
            elif parts[1] not in names and parts[1] not in present \
                    and (close := difflib.get_close_matches(parts[1], names, n=1, cutoff=0.8)):
                raise ValueError(f"{key} is not an argument of Lightning's Trainer; did you mean "
                                 f"trainer.{close[0]}?")
        fixed.append(arg)
    return fixed
