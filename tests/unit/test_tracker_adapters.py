"""Trackers are adapters: one module in src/dlops/tracking/ and one file in conf/logger/ each."""

import ast
from pathlib import Path

from omegaconf import OmegaConf

from dlops.tracking.loggers import checkpoint_state, continue_trackers
from dlops.tracking.tracker import ResumePoint, Tracker, tracker_class

ROOT = Path(__file__).resolve().parents[2]
TRACKER_MODULES = ("wandb", "mlflow", "tensorboard", "pytorch_lightning.loggers", "lightning.pytorch.loggers")


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_only_tracking_modules_import_a_tracker():
    for path in (ROOT / "src" / "dlops").rglob("*.py"):
        if path.parent.name == "tracking":
            continue
        for module in imported_modules(path):
            assert not module.startswith(TRACKER_MODULES), f"{path} imports {module}"
            assert module in ("dlops.tracking.loggers", "dlops.tracking.tracker") \
                or not module.startswith("dlops.tracking"), f"{path} imports the adapter {module}"


def test_every_shipped_logger_config_targets_a_tracker():
    files = sorted((ROOT / "src" / "dlops" / "conf" / "logger").glob("*.yaml"))
    targets = {node["_target_"] for path in files for name, node in OmegaConf.load(path).items()
               if name != "defaults" and node}
    assert len(targets) == 4  # csv, tensorboard, wandb, mlflow
    for target in targets:
        assert target.startswith("dlops.tracking.") and tracker_class(target) is not None, target


def test_resume_points_each_tracker_config_at_the_checkpoint():
    cfg = OmegaConf.create({"logger": {
        "csv": {"_target_": "dlops.tracking.csv.CSVLogger"},  # a run started before the move
        "tensorboard": {"_target_": "dlops.tracking.tensorboard_logger.TensorBoardLogger"},
        "wandb": {"_target_": "dlops.tracking.wandb_logger.WandbLogger"},
        "mlflow": {"_target_": "dlops.tracking.mlflow_logger.MLFlowLogger"},
        "other": {"_target_": "some.user.Logger"},
    }})
    old = {"wandb": {"id": "abc"}, "mlflow": {"run_id": "r1"}}
    continue_trackers(cfg, ResumePoint(step=45, state={"csv_rows": 7}, summary=old))
    logger = cfg.logger
    assert (logger.csv._target_, logger.csv.keep_rows) == ("dlops.tracking.csv_logger.CSVLogger", 7)
    assert logger.tensorboard.purge_step == 45
    assert (logger.wandb.id, logger.wandb.resume) == ("abc", "allow")
    assert logger.mlflow.run_id == "r1" and "run_id" not in logger.other
    fresh = OmegaConf.create({"logger": {"csv": {"_target_": "dlops.tracking.csv_logger.CSVLogger"}}})
    continue_trackers(fresh, ResumePoint())  # no checkpoint yet: the CSV starts over
    assert fresh.logger.csv.keep_rows == 0


def test_checkpoint_state_comes_from_every_tracker_and_nothing_else():
    class Counting(Tracker):
        def checkpoint_state(self):
            return {"counting_rows": 3}

    assert checkpoint_state([Counting(), object(), Tracker()]) == {"counting_rows": 3}
