"""What dlops does with every active logger: log the config once, finish at the end."""

from typing import Any

from omegaconf import DictConfig, OmegaConf


def log_config(loggers: list, cfg: DictConfig, **extra: Any) -> None:
    """Log the resolved config plus `extra` facts (parameter count, seed, tags) to every logger."""
    params = {**OmegaConf.to_container(cfg, resolve=True), **extra}
    for logger in loggers:
        logger.log_hyperparams(params)


def finish(loggers: list, status: str, best: float | None = None) -> None:
    """Flush every logger; end W&B runs with the run's exit status so each job is its own run.

    TensorBoard's HPARAMS tab gets `best` (the best monitored value) as its `hp_metric`.
    """
    for logger in loggers:
        if best is not None and type(logger).__name__ == "TensorBoardLogger":
            logger.log_metrics({"hp_metric": best})
        logger.finalize("success" if status == "completed" else "failed")
    if any(type(logger).__name__ == "WandbLogger" for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.run.finish(exit_code=0 if status == "completed" else 1)
