"""The training command line before Hydra reads it: which kind of run, which config flags,
and a run dir given literally, created early so that an unwritable one is one message."""

import os
import re
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from dlops.errors import ConfigError
from dlops.rundir import lock, overrides

MULTIRUN_FLAGS = ("-m", "--multirun")
CONFIG_FLAGS = ("-cp", "-cn", "-cd", "--config-path", "--config-name", "--config-dir")
TORCHRUN_VARIABLE = "TORCHELASTIC_RUN_ID"  # set by torchrun in every process it starts
# what stands between the program and Hydra's arguments: ["train"] for `dlops train` (set by
# dlops.launch); DDP ranks > 0 are started with it again
ENTRY: list[str] = []
# the training command as the user typed it, for messages (`python train.py` when started so)
COMMAND = "dlops train"


def is_multirun(argv: list[str]) -> bool:
    return any(arg in MULTIRUN_FLAGS for arg in argv)


def config_flags(argv: list[str]) -> list[str]:
    """The arguments that choose the config (`-cn NAME`, `--config-dir=DIR`, ...)."""
    kept, value_next = [], False
    for arg in argv:
        if value_next or arg.split("=", 1)[0] in CONFIG_FLAGS:
            kept.append(arg)
            value_next = arg in CONFIG_FLAGS
    return kept


def swept_keys(task: list[str]) -> set[str]:
    """Keys that a sweep varies (`seed=1,2`, `x=range(3)`, `lr=interval(...)`), by Hydra's parser."""
    parsed = OverridesParser.create().parse_overrides([o for o in task if overrides.is_override(o)])
    return {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}


def cannot_create(path: str, exc: OSError) -> str:
    """The message for a run directory that cannot be made."""
    return (f"error: cannot create the run directory {Path(path).resolve()}: {exc.strerror}. "
            f"Start {COMMAND} from a folder you can write to, or set hydra.run.dir "
            "(hydra.sweep.dir with -m) to one.")


def check_torchrun_run_dir(argv: list[str]) -> None:
    """Under torchrun with several processes, refuse a command without a literal run dir (sweep
    dir with -m): torchrun starts train.py once per process, on every node, and each would make
    a run dir of its own; given one, they all train one run in it, written by rank 0."""
    if int(os.environ.get("WORLD_SIZE") or 1) < 2:
        return
    wanted = "hydra.sweep.dir" if is_multirun(argv) else "hydra.run.dir"
    if not any(overrides.is_override(a) and overrides.key(a) == wanted and literal_path(overrides.value(a))
               for a in argv[1:]):
        raise ConfigError(
            f"torchrun starts train.py in each of its {os.environ['WORLD_SIZE']} processes, on every "
            f"node, and each would make a {'sweep' if wanted == 'hydra.sweep.dir' else 'run'} dir of "
            f"its own: give them all the same {wanted}=DIR on a file system that every node shares "
            "(resume= does that itself); rank 0 writes it.")


def make_run_dirs(argv: list[str]) -> None:
    """Create the run (or sweep) directory given literally on the command line, before Hydra does,
    so that an unwritable one ends with one message (exit code 1) instead of a traceback."""
    wanted = "hydra.sweep.dir" if is_multirun(argv) else "hydra.run.dir"
    for arg in argv[1:]:
        if overrides.is_override(arg) and overrides.key(arg) == wanted:
            value = literal_path(overrides.value(arg))
            if value:
                try:
                    Path(value).mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise SystemExit(cannot_create(value, exc)) from None
                if wanted == "hydra.run.dir":  # before Hydra writes .hydra/ and train.log into it
                    try:
                        lock.acquire(value)
                    except ConfigError as exc:
                        name = Path(argv[0]).name
                        raise SystemExit(f"{name}: error: cannot run in {value}: {exc}") from None


def literal_path(value: str) -> str | None:
    """The path a Hydra override value means, or None when Hydra decides it (an interpolation,
    a sweep, anything but one string): `'a,b'` -> `a,b`, `a\\${x}` -> `a${x}`."""
    if value[:1] in ("'", '"'):
        try:
            value = OverridesParser.create().parse_override(f"key={value}").value()
        except Exception:  # noqa: BLE001 - not ours to judge: Hydra reports it
            return None
        if not isinstance(value, str):
            return None
    if re.search(r"(?<!\\)\$\{", value):
        return None
    return value.replace("\\${", "${") or None


def hydra_value(path: str | Path) -> str:
    """`path` as a Hydra override value that means exactly it: quoted (so `,` `[` `'` and
    non-ASCII are text) with `${` escaped (so OmegaConf does not interpolate it)."""
    text = str(path)
    if "\\" in text:
        raise ConfigError(f"{text}: resume= cannot pass a path holding a backslash to Hydra; "
                          "rename the folder.")
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"
