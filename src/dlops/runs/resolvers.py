"""OmegaConf resolvers used by the config tree (light: no torch here)."""

import os
from pathlib import Path

from omegaconf import OmegaConf


def unique_dir(path: str) -> str:
    """Create and return `path`, or `path-2`, `path-3`, ... if it exists already.

    `os.mkdir` is atomic, so two runs started in the same second (even on a shared file
    system) never get the same directory.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 1
    while True:
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = f"{path}-{n}"


def register_resolvers() -> None:
    """Register `${dlops.unique_dir:...}`; cached so a config resolves it once."""
    if not OmegaConf.has_resolver("dlops.unique_dir"):
        OmegaConf.register_new_resolver("dlops.unique_dir", unique_dir, use_cache=True)
