"""`dlops eval RUN`: test a run's checkpoint again, on its own test split or on other data.

Writes `RUN/eval/<YYYY-MM-DD_HH-MM-SS>/` only: `metrics.json` (metrics, checkpoint, overrides),
`config.yaml` (the composed config) and, for classifiers, the confusion matrix and ROC that the
evaluation callback draws during training. The run's own files are never changed.
"""

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dlops.errors import ConfigError
from dlops.inference.outdir import new_output_dir
from dlops.inference.restore import compose_run_config, relative_to_run, restore
from dlops.rundir import atomic, layout


def check_same_classes(model: Any, datamodule: Any) -> None:
    """Refuse data whose class names differ from the ones the model was trained on."""
    trained = list(getattr(model, "hparams", {}).get("class_names") or [])
    given = list(getattr(datamodule, "class_names", None) or [])
    if trained and given and trained != given:
        raise ConfigError(f"the run was trained on the classes {trained}, the data given has {given}; "
                          "evaluate on data with the same classes (folder names) in the same order.")


def test_trainer(cfg: Any, out_dir: Path) -> Any:
    """The run's Trainer settings (device, precision, limits) on one device, writing nothing."""
    from hydra.utils import instantiate

    from dlops import lightning

    trainer_cfg = OmegaConf.masked_copy(cfg, ["trainer"]).trainer
    for key in ("strategy", "num_nodes", "callbacks", "logger", "plugins", "profiler"):
        trainer_cfg.pop(key, None)
    return instantiate(lightning.for_run(trainer_cfg), devices=1, logger=False, callbacks=[],
                       enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                       default_root_dir=str(out_dir))


def evaluate_run(run_dir: str | Path, ckpt: str = "best", overrides: list[str] | None = None) -> Path:
    """Test checkpoint `ckpt` of the run with `trainer.test`; return the eval folder it wrote."""
    from dlops import lightning
    from dlops.build import build_datamodule
    from dlops.callbacks.progress import scalar_metrics
    from dlops.quiet import quiet_run
    from dlops.rundir.summary import now, package_versions

    overrides = list(overrides or [])
    restored = restore(run_dir, ckpt)
    cfg, datamodule = restored.cfg, restored.datamodule
    if overrides:  # other data (or settings): the model keeps the facts of the data it was trained on
        cfg = compose_run_config(restored.run_dir, overrides)
        datamodule = build_datamodule(cfg, "test")
        check_same_classes(restored.model, datamodule)
    quiet_run()
    for package in lightning.PACKAGES:
        logging.getLogger(package).setLevel(logging.WARNING)
    lightning.module().seed_everything(cfg.get("seed", 0), verbose=False)
    # a failure or Ctrl-C leaves no half-made eval for `dlops report` to show
    with new_output_dir(restored.run_dir / layout.EVAL) as out_dir:
        results = test_trainer(cfg, out_dir).test(restored.model, datamodule=datamodule, verbose=False)
        record = {
            "checkpoint": relative_to_run(restored.checkpoint, restored.run_dir),
            "checkpoint_sha256": restored.checkpoint_sha256,
            "epoch": restored.epoch,
            "overrides": overrides,
            "metrics": scalar_metrics(results[0]) if results else {},  # NaN is written as null
            "created_at": now(),
            "versions": package_versions(),
        }
        write_classifier_plots(restored.model, record, out_dir)
        atomic.write_bytes(out_dir / "config.yaml", OmegaConf.to_yaml(cfg).encode())
        atomic.write_json(out_dir / layout.EVAL_METRICS, record)  # last: it says the eval is whole
    return out_dir


def write_classifier_plots(model: Any, record: dict[str, Any], out_dir: Path) -> None:
    """The confusion matrix and ROC of the test probabilities, as the evaluation callback draws them."""
    probs, labels = getattr(model, "test_probs", None), getattr(model, "test_labels", None)
    if probs is None or labels is None:
        return  # not a dlops classifier: its test_step's metrics are all there is
    from dlops.callbacks.evaluation import evaluate, write_files

    names = list(model.hparams.class_names)
    result = {"epoch": record["epoch"], "checkpoint": record["checkpoint"],
              **evaluate(probs, labels, names)}
    write_files(result, out_dir)


def print_table(out_dir: Path) -> None:
    """The eval's metrics beside the run's own test metrics (from its summary.json)."""
    from rich.console import Console
    from rich.table import Table

    from dlops.inference.restore import run_summary

    record = json.loads((out_dir / layout.EVAL_METRICS).read_text())
    try:
        own = (run_summary(out_dir.parent.parent) or {}).get("test_metrics") or {}
    except ConfigError:  # a damaged summary.json: the eval's own metrics are all there is to show
        own = {}
    table = Table(title=f"eval of {record['checkpoint']}"
                  + (f" with {' '.join(record['overrides'])}" if record["overrides"] else ""))
    for column in ("metric", "this eval", "run's own test"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, value in record["metrics"].items():
        shown = "n/a" if value is None else f"{value:.6f}"
        table.add_row(name, shown, f"{own[name]:.6f}" if isinstance(own.get(name), float) else "")
    Console().print(table)
    print(f"wrote {out_dir}")
