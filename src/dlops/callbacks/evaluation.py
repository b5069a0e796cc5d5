"""Confusion matrix and ROC curve from validation probabilities, at the best epoch and at the end.

For dlops' Classifier and any classifier whose `forward` returns logits; other models are
skipped with one line saying why.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_confusion_matrix,
    binary_roc,
    multiclass_confusion_matrix,
)

from dlops.errors import ConfigError
from dlops.lightning import Adaptable
from dlops.models.auroc import per_class_auroc, per_class_roc
from dlops.tracking.loggers import log_figures

if TYPE_CHECKING:
    import lightning.pytorch as pl

log = logging.getLogger(__name__)


def evaluate(probs: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict[str, Any]:
    """Confusion matrix, ROC curve(s) and AUC(s) from probabilities.

    Binary: `probs` is P(positive) `(N,)`, one ROC for the positive class. Multiclass: `probs`
    is `(N, C)`, one one-vs-rest ROC per class that has samples among others (dlops.models.auroc).
    Curves use every distinct probability as a threshold, so they are exact.
    """
    if probs.ndim == 1:
        matrix = binary_confusion_matrix(probs, labels)
        fpr, tpr, thresholds = binary_roc(probs, labels)
        curves = {names[1]: (fpr, tpr, thresholds)}
        aucs = {names[1]: binary_auroc(probs, labels)}
    else:
        n = probs.shape[1]
        matrix = multiclass_confusion_matrix(probs, labels, num_classes=n)
        curves = {names[c]: roc for c, roc in per_class_roc(probs, labels).items()}
        aucs = {names[c]: auc for c, auc in per_class_auroc(probs, labels).items()}
    return {
        "labels": names,
        "confusion_matrix": matrix.tolist(),
        "auc": {name: float(auc) for name, auc in aucs.items()},
        "roc": {name: {"fpr": f.tolist(), "tpr": t.tolist(), "threshold": th.tolist()}
                for name, (f, t, th) in curves.items()},
    }


def write_files(result: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Write the numbers (JSON, CSV) and the two figures (PNG) into `folder`; return the figures."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, no figures left open

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evaluation.json").write_text(json.dumps(result, indent=1))
    names, matrix = result["labels"], result["confusion_matrix"]
    rows = ["true\\predicted," + ",".join(names)]
    rows += [f"{name}," + ",".join(map(str, row)) for name, row in zip(names, matrix, strict=True)]
    (folder / "confusion_matrix.csv").write_text("\n".join(rows) + "\n")
    lines = ["class,fpr,tpr,threshold"]
    for name, roc in result["roc"].items():
        points = zip(roc["fpr"], roc["tpr"], roc["threshold"], strict=True)
        lines += [f"{name},{f},{t},{th}" for f, t, th in points]
    (folder / "roc.csv").write_text("\n".join(lines) + "\n")

    size = max(3.5, 0.5 * len(names))
    cm_fig = Figure(figsize=(size + 1, size), layout="tight")
    ax = cm_fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, count, ha="center", va="center", color="white" if count > peak / 2 else "black")
    ax.set(xticks=range(len(names)), yticks=range(len(names)), xticklabels=names, yticklabels=names,
           xlabel="predicted", ylabel="true", title=f"Confusion matrix (epoch {result['epoch']})")
    cm_fig.colorbar(image, ax=ax)
    cm_fig.savefig(folder / "confusion_matrix.png", dpi=100)

    roc_fig = Figure(figsize=(5, 5), layout="tight")
    ax = roc_fig.subplots()
    for name, roc in result["roc"].items():
        ax.plot(roc["fpr"], roc["tpr"], label=f"{name} (AUC {result['auc'][name]:.4f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
           title=f"ROC (epoch {result['epoch']})")
    if result["roc"]:  # none when the data holds one class: no curve is defined
        ax.legend(loc="lower right", fontsize="small")
    roc_fig.savefig(folder / "roc.png", dpi=100)
    return {"confusion_matrix": cm_fig, "roc": roc_fig}


class EvaluationPlots(Adaptable):
    """Writes `plots/` at every new best validation epoch and `plots/final/` when fitting ends,
    and logs the same figures to every active tracker that takes figures (TensorBoard, W&B, MLflow)."""

    lightning_base = "callbacks.Callback"

    def __init__(self, output_dir: str, labels: list[str] | None = None, monitor: str = "val_loss",
                 mode: str = "min") -> None:
        self.output_dir, self.labels = Path(output_dir), labels
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.skipped = False  # said once why there are no plots for this model
        self.validated_epoch: int | None = None  # the last epoch validated (numbered from 0)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}  # so a resumed run draws plots/ only for a better epoch

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best = value
            return True
        return False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if not trainer.sanity_checking:
            self.validated_epoch = trainer.current_epoch
        if trainer.sanity_checking or value is None or not self._improved(float(value)):
            return
        self._write(trainer, pl_module, self.output_dir, "val_best")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning's epoch counter has moved past the last epoch by now: name the one validated
        self._write(trainer, pl_module, self.output_dir / "final", "val_final", self.validated_epoch)

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, folder: Path, tag: str,
               epoch: int | None = None) -> None:
        if not trainer.is_global_zero or self.skipped:
            return
        found = validation_probabilities(trainer, pl_module)
        if isinstance(found, str):
            self.skipped = True
            log.warning("evaluation plots skipped: %s", found)
            return
        probs, labels = found
        classes = 2 if probs.ndim == 1 else probs.shape[1]
        names = (self.labels or pl_module.hparams.get("class_names")
                 or getattr(trainer.datamodule, "class_names", None) or [str(c) for c in range(classes)])
        if len(names) != classes:
            raise ConfigError(f"callbacks.evaluation.labels has {len(names)} names for {classes} "
                              f"classes: {list(names)}; give one name per class or null for the "
                              "datamodule's class names.")
        result = {"epoch": trainer.current_epoch if epoch is None else epoch, self.monitor: self.best,
                  **evaluate(probs, labels, list(names))}
        figures = write_files(result, folder)
        log_figures(trainer.loggers, figures, result, tag, trainer.global_step)


def validation_probabilities(trainer: pl.Trainer, pl_module: pl.LightningModule
                             ) -> tuple[torch.Tensor, torch.Tensor] | str:
    """Class probabilities and labels of the validation set, or why there are none.

    dlops' Classifier keeps them from its validation epoch. Any other module is run over the
    datamodule's validation batches, which must be `(inputs, labels)`, and its `forward` must
    return logits: `(N,)` or `(N, 1)` for two classes (sigmoid), `(N, C)` for C classes (softmax).
    """
    if getattr(pl_module, "val_probs", None) is not None:
        return pl_module.val_probs, pl_module.val_labels
    datamodule = trainer.datamodule
    if datamodule is None or not callable(getattr(datamodule, "val_dataloader", None)):
        return "there is no datamodule with a val_dataloader to evaluate"
    was_training, all_logits, all_labels = pl_module.training, [], []
    pl_module.eval()
    try:
        with torch.no_grad():
            for batch in datamodule.val_dataloader():
                if not (isinstance(batch, list | tuple) and len(batch) == 2):
                    return "validation batches are not (inputs, labels) pairs"
                inputs, labels = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                logits = pl_module(inputs)
                if not isinstance(logits, torch.Tensor) or logits.ndim not in (1, 2):
                    return f"{type(pl_module).__name__}.forward does not return logits (N,) or (N, C)"
                all_logits.append(logits.float().cpu())
                all_labels.append(labels.long().cpu())
    finally:
        pl_module.train(was_training)
    if not all_logits:
        return "the validation set is empty"
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits.squeeze(1)
    probs = torch.sigmoid(logits) if logits.ndim == 1 else torch.softmax(logits, dim=-1)
    classes = 2 if probs.ndim == 1 else probs.shape[1]
    if labels.ndim != 1 or len(labels) != len(probs) or labels.min() < 0 or labels.max() >= classes:
        return f"the labels are not class indices 0..{classes - 1} for the model's {classes} outputs"
    return probs, labels
