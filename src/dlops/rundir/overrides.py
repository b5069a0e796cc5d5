"""Hydra overrides as recorded in a run dir (`summary.json`, `.hydra/overrides.yaml`): one way
to read their keys and values, for the lifecycle and the readers alike (standard library only;
`dlops.lifecycle.argv` uses Hydra's own parser where the grammar matters)."""

from collections.abc import Iterable


def is_override(arg: str) -> bool:
    """Whether a command-line argument is an override (`key=value`), not a flag such as `-m`."""
    return "=" in arg and not arg.startswith("-")


def key(override: str) -> str:
    """The key of an override: `+a.b=1` -> `a.b`, `model=cnn` -> `model`, `~logger` -> `logger`."""
    return override.split("=", 1)[0].lstrip("+~")


def value(override: str) -> str:
    """The value as written: `seed=1` -> `1`; a deletion `~key` -> `~`."""
    return "~" if override.startswith("~") else override.split("=", 1)[1] if "=" in override else ""


def as_dict(overrides: Iterable[str]) -> dict[str, str]:
    """`["seed=1", "+trainer.x=2", "~logger"]` -> `{"seed": "1", "trainer.x": "2", "logger": "~"}`."""
    return {key(str(o)): value(str(o)) for o in overrides}
