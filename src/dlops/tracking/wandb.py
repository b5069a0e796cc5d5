"""W&B that never hangs: offline unless online is asked for and possible."""

import logging
import netrc
import os
import secrets
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dlops.errors import ConfigError

log = logging.getLogger(__name__)


def has_api_key() -> bool:
    """Whether W&B credentials exist (WANDB_API_KEY or a `wandb login` entry in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def server_reachable(timeout: float = 3.0) -> bool:
    """Whether the W&B server accepts a TCP connection within `timeout` seconds."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def choose_offline(offline: bool | None) -> bool:
    """Decide the mode: True/False as asked (online fails early if impossible), None = automatic."""
    if offline is None and os.environ.get("WANDB_MODE") in ("offline", "dryrun", "online"):
        offline = os.environ["WANDB_MODE"] != "online"
    if offline:
        return True
    if offline is False:  # asked for online: fail now rather than hang at a login prompt
        if not has_api_key():
            raise ConfigError("W&B online needs an API key: set WANDB_API_KEY or run `wandb login`, "
                              "or drop logger.wandb.offline=false to log offline.")
        if not server_reachable():
            raise ConfigError("W&B online was asked for but the W&B server cannot be reached; "
                              "drop logger.wandb.offline=false to log offline and sync later.")
        return False
    return not (has_api_key() and server_reachable())


def wandb_logger(save_dir: str, offline: bool | None = None, group: str | None = None,
                 **kwargs: Any):
    """A Lightning WandbLogger writing to `save_dir/wandb`, offline unless online is possible.

    Inside a sweep, runs are grouped by the sweep directory unless `group` is given.
    """
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    offline = choose_offline(offline)
    if group is None:
        group = sweep_name()
    run_id = kwargs.pop("id", None) or secrets.token_hex(4)  # known now, stored in summary.json
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(save_dir=save_dir, offline=offline, group=group, id=run_id,
                         settings=wandb.Settings(silent=True), **kwargs)
    if offline:
        log.info("W&B logs offline to %s/wandb; upload later with `wandb sync %s/wandb/offline-run-*`",
                 save_dir, save_dir)
    return logger


def sweep_name() -> str | None:
    """The sweep directory's name (e.g. multirun/2026-11-26/16-14-15) in a multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return HydraConfig.get().sweep.dir
