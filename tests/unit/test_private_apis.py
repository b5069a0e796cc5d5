"""The few private parts of dlops' dependencies that dlops still relies on, each checked here so
that an upgrade that changes one fails with a message saying what to change, instead of a run
breaking somewhere later. pyproject.toml bounds these packages to the minor versions tested
(README, "Versions tested")."""

import importlib

import pytest

from dlops.lightning import PACKAGES


@pytest.mark.parametrize("package", PACKAGES)
def test_lightning_starts_ddp_ranks_with_its_subprocess_script_launcher(package, tmp_path):
    """dlops.lifecycle.ddp.prepare_relaunch recognises the launcher that re-runs the command."""
    pl = importlib.import_module(package)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False,
                         default_root_dir=tmp_path)
    assert type(trainer.strategy.launcher).__name__ == "_SubprocessScriptLauncher", (
        f"{package}'s DDP launcher is now {type(trainer.strategy.launcher).__name__}: update "
        "dlops.lifecycle.ddp.prepare_relaunch, which rewrites the command it re-runs")


@pytest.mark.parametrize("package", PACKAGES)
def test_lightnings_wandb_logger_still_passes_anonymous_to_wandb_init(package, tmp_path):
    """dlops.tracking.wandb_logger drops it: W&B warns that the setting has no effect."""
    loggers = importlib.import_module(f"{package}.loggers")
    logger = loggers.WandbLogger(save_dir=str(tmp_path), offline=True)
    assert "anonymous" in getattr(logger, "_wandb_init", {}), (
        f"{package}'s WandbLogger no longer keeps `anonymous` in `_wandb_init`: remove the pop in "
        "dlops.tracking.wandb_logger.WandbLogger.__init__")


@pytest.mark.parametrize("package", PACKAGES)
def test_lightning_names_the_hook_it_sets_around_every_call_current_fx_name(package):
    """dlops.models.classifier.Classifier.__setattr__ skips nn.Module's checks for it (a speed-up)."""
    module = importlib.import_module(package).LightningModule()
    assert hasattr(module, "_current_fx_name"), (
        f"{package}'s LightningModule no longer has `_current_fx_name`: the shortcut in "
        "Classifier.__setattr__ now does nothing; remove it or follow the new name")


@pytest.mark.parametrize("package", PACKAGES)
def test_lightnings_loop_progress_counters_dlops_reads_for_exact_resume(package, tmp_path):
    """dlops.data.base and dlops.callbacks.resumable read how far an epoch has trained."""
    pl = importlib.import_module(package)
    progress = pl.Trainer(logger=False, default_root_dir=tmp_path).fit_loop.epoch_loop.batch_progress
    assert hasattr(progress, "is_last_batch") and hasattr(progress.current, "processed"), (
        f"{package}'s fit_loop.epoch_loop.batch_progress changed: update dlops.data.base."
        "_batches_trained and dlops.callbacks.resumable")


def test_hydras_basic_sweeper_is_named_as_dlops_expects_in_multirun_yaml():
    """dlops.lifecycle.resume resumes the sweeps made by Hydra's basic sweeper, found by its name."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    from dlops.lifecycle.resume import BASIC_SWEEPER

    Plugins.instance()  # registers Hydra's own plugins' configs
    target = ConfigStore.instance().load("hydra/sweeper/basic.yaml").node._target_
    assert target == BASIC_SWEEPER, (
        f"Hydra's basic sweeper is now {target}: update dlops.lifecycle.resume.BASIC_SWEEPER")


def test_submitit_waits_for_a_result_file_for_results_timeout_s():
    """dlops' SLURM launcher shortens that wait for jobs SLURM ended without a result."""
    from submitit.core.core import Job

    assert isinstance(getattr(Job, "_results_timeout_s", None), int | float), (
        "submitit's Job no longer has _results_timeout_s: update "
        "hydra_plugins.dlops_slurm_launcher.launcher (RESULT_WAIT_S)")
