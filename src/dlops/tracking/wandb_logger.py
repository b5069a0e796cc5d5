"""W&B that never hangs: offline unless online is asked for and possible; resume, figures, exit status."""

import logging
import netrc
import os
import secrets
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dlops.errors import ConfigError
from dlops.tracking.tracker import ResumePoint, Tracker, sweep_dir

log = logging.getLogger(__name__)
DEFAULT_PROJECT = "dlops"


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


class WandbLogger(Tracker):
    """Lightning's WandbLogger writing to `save_dir/wandb`, offline unless online is possible.

    Inside a sweep, runs are grouped by the sweep directory unless `group` is given. The run id
    is chosen here, so summary.json can hold it for a resume to continue the same run.
    """

    lightning_base = "loggers.WandbLogger"

    def __init__(self, save_dir: str, offline: bool | None = None, group: str | None = None,
                 project: str | None = None, **kwargs: Any) -> None:
        import wandb

        offline = choose_offline(offline)
        run_id = kwargs.pop("id", None) or secrets.token_hex(4)
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        # a project the config sets wins, then WANDB_PROJECT, then dlops' default (Lightning's
        # would be "lightning_logs"); `entity: null` leaves WANDB_ENTITY to W&B itself
        project = project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        self.user_mode = os.environ.get("WANDB_MODE")  # Lightning sets it for offline runs
        super().__init__(save_dir=save_dir, offline=offline, group=sweep_dir() if group is None else group,
                         id=run_id, project=project, settings=wandb.Settings(silent=True), **kwargs)
        self._wandb_init.pop("anonymous", None)  # W&B warns that the setting has no effect
        if offline:
            log.info("W&B logs offline to %s/wandb; upload later with `wandb sync %s/wandb/offline-run-*`",
                     save_dir, save_dir)

    @classmethod
    def continue_config(cls, node: Any, point: ResumePoint) -> None:
        run_id = (point.summary.get("wandb") or {}).get("id")
        if run_id and not point.copied_from:
            node.id, node.resume = run_id, "allow"  # the same W&B run

    def start(self, summary: dict[str, Any]) -> None:
        run = self.experiment
        if self.user_mode is None:  # WANDB_MODE as the user left it, for the next job of a sweep
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = self.user_mode
        summary["wandb"] = {"id": self.version, "offline": run.offline, "project": run.project}
        monitor, mode = summary.get("monitor"), summary.get("mode")  # min or max by now
        if monitor and mode:
            # the run's summary shows the best value by the run's mode where people look for it,
            # `{monitor: {min: best, last: last}}`, rather than W&B's default, the last value
            run.define_metric(monitor, step_metric="trainer/global_step", summary=f"{mode},last")

    def log_figures(self, figures: dict[str, Any], result: dict[str, Any], tag: str, step: int) -> None:
        """The confusion matrix as an image and a table, the ROC as a line plot, the AUCs."""
        import wandb

        names, matrix, roc = result["labels"], result["confusion_matrix"], result["roc"]
        table = wandb.Table(columns=["true", "predicted", "count"],
                            data=[[names[i], names[j], matrix[i][j]]
                                  for i in range(len(names)) for j in range(len(names))])
        self.log_metrics({
            f"{tag}/confusion_matrix": wandb.Image(figures["confusion_matrix"]),
            f"{tag}/confusion_table": table,
            f"{tag}/roc": wandb.plot.line_series(
                xs=[c["fpr"] for c in roc.values()], ys=[c["tpr"] for c in roc.values()],
                keys=list(roc), title="ROC", xname="false positive rate"),
            **{f"{tag}/auc_{name}": auc for name, auc in result["auc"].items()},
        }, step=step)

    def finish(self, status: str, best: float | None) -> None:
        """Finish the W&B run with the job's exit status, so each sweep job is its own run."""
        import wandb

        super().finish(status, best)
        if wandb.run is not None:
            wandb.run.finish(exit_code=0 if status == "completed" else 1)
