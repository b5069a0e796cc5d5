"""One classifier LightningModule, generic over the net; binary or multiclass by `num_classes`."""

import inspect
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchmetrics.functional import accuracy, auroc

from dlops.errors import ConfigError, DivergedError
from dlops.lightning import Adaptable
from dlops.models.auroc import macro_auroc


def _plain(value: Any) -> Any:
    """Config nodes as plain dicts and lists, so checkpoints load with `weights_only=True`."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


class Classifier(Adaptable):
    """Classifies raw images (pixel values 0-255, normalised here on the whole batch).

    Two classes train one logit with BCE (the reference project's "3" vs "no 3"); more train one logit per
    class with cross entropy. `net`, `optimizer` and `scheduler` are Hydra configs: the net is
    built here with the data's shape, so hyperparameters hold only plain values and the
    checkpoint restores itself through `Classifier.load_from_checkpoint(path)`. A LightningModule
    of the run's Lightning package (see dlops.lightning).
    """

    lightning_base = "LightningModule"

    def __init__(
        self,
        net: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        num_classes: int = 2,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        class_names: list[str] | None = None,
        class_weights: list[float] | None = None,
        mean: float = 0.1307,
        std: float = 0.3081,
        monitor: str = "val_loss",
    ) -> None:
        super().__init__()
        self.save_hyperparameters({
            "net": _plain(net),
            "optimizer": _plain(optimizer),
            "scheduler": _plain(scheduler),
            "num_classes": int(num_classes),
            "input_shape": [int(d) for d in input_shape],
            "class_names": list(class_names or [str(c) for c in range(num_classes)]),
            "class_weights": None if class_weights is None else [float(w) for w in class_weights],
            "mean": float(mean),
            "std": float(std),
            "monitor": str(monitor),
        }, logger=False)  # the pipeline logs the whole resolved config instead
        self.binary = num_classes == 2
        self.net = instantiate(self.hparams.net, input_shape=input_shape,
                               num_outputs=1 if self.binary else num_classes)
        # balanced loss: BCE weighs positives by w1/w0, cross entropy takes one weight per class
        weights = torch.tensor(class_weights or [1.0] * num_classes)
        self.register_buffer("loss_weights", weights[1:] / weights[0] if self.binary else weights)
        # scale 0-255 pixels and normalise in one multiply-add
        self.scale, self.shift = 1 / (255 * std), -mean / std
        # this epoch's running [loss sum, correct predictions, samples], added to in place
        # (a plain tensor, not a buffer: DDP would overwrite every rank's sums with rank 0's)
        self.train_sums = torch.zeros(3)
        self.outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"val": [], "test": []}
        # the last validation epoch's probabilities and labels (read by the evaluation callback)
        self.val_probs: torch.Tensor | None = None
        self.val_labels: torch.Tensor | None = None
        # the same for the last test epoch (read by `dlops eval` for its confusion matrix and ROC)
        self.test_probs: torch.Tensor | None = None
        self.test_labels: torch.Tensor | None = None

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None,  # type: ignore[override]
                             hparams_file: Any = None, strict: bool | None = None,
                             weights_only: bool | None = True, **kwargs: Any) -> "Classifier":
        """A Classifier built from a checkpoint's hyperparameters with its weights, like Lightning's
        loader, but the file is only ever read as data: torch's safe loader, and the classes its
        hyperparameters name checked against dlops' allowlist (`dlops.models.allowlist`) before
        anything is called, under every key Lightning reads them from (today's and the legacy
        ones). Arguments given here (e.g. `net=cfg.model.net`) are code the caller trusts and
        replace the file's. `weights_only=False` is refused: a checkpoint never runs code."""
        from dlops.lifecycle.checkpoints import read_checkpoint
        from dlops.models.allowlist import check_hyperparameters, saved_hyperparameters

        if weights_only is False:
            raise ConfigError("Classifier.load_from_checkpoint reads checkpoints as data only "
                              "(weights_only=True); leave weights_only out.")
        checkpoint = read_checkpoint(checkpoint_path, training=False)
        hparams = saved_hyperparameters(checkpoint, cls)
        if hparams_file is not None:
            hparams.update(_yaml_mapping(hparams_file))
        hparams = {k: v for k, v in hparams.items() if k not in kwargs}
        check_hyperparameters(hparams, f"checkpoint {checkpoint_path}")
        accepted = inspect.signature(cls.__init__).parameters
        model = cls(**{k: v for k, v in hparams.items() if k in accepted}, **kwargs)
        model.load_state_dict(checkpoint["state_dict"], strict=True if strict is None else strict)
        return model.to(map_location) if isinstance(map_location, str | torch.device) else model

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` around every hook, ~40 times a training step, and
        # nn.Module.__setattr__ spends microseconds each time finding out that it is a plain value.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of raw images: `(N,)` for two classes, else `(N, num_classes)`."""
        logits = self.net(images.float() * self.scale + self.shift)
        return logits.squeeze(-1) if self.binary else logits

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """P(positive class) `(N,)` for two classes, else class probabilities `(N, C)`."""
        return torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=-1)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return F.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=self.loss_weights)
        return F.cross_entropy(logits, labels, weight=self.loss_weights)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self._loss(logits, labels)
        with torch.no_grad():
            preds = (logits > 0).long() if self.binary else logits.argmax(-1)
            n = labels.numel()
            self.train_sums.add_(torch.stack([loss * n, (preds == labels).sum(), loss.new_tensor(n)]))
        return loss

    def on_train_start(self) -> None:
        self.train_sums = self.train_sums.to(self.device)  # restored from a checkpoint on the CPU

    def on_train_epoch_start(self) -> None:
        self.train_sums = torch.zeros(3, device=self.device)

    def _train_totals(self) -> torch.Tensor:
        """[loss sum, correct, count] of this epoch so far, summed over every process."""
        totals = self.train_sums.clone()  # DDP's reduce sums in place
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        return totals

    def on_train_epoch_end(self) -> None:
        loss_sum, correct, count = self._train_totals().tolist()
        metrics = {"train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1)}
        if not math.isfinite(metrics["train_loss"]):
            raise DivergedError(
                f"training loss is {metrics['train_loss']} in epoch {self.current_epoch}: the run "
                f"diverged. Lower model.optimizer.lr or check the data."
            )
        # for checkpoint, early stopping and progress bar; the totals are every process's already,
        # so sync_dist only tells Lightning so (else it warns under DDP, once per metric)
        self.log_dict(metrics, logger=False, sync_dist=True)
        # Written to the trackers now rather than after the epoch-end hooks, as Lightning would:
        # the checkpoint saved at this epoch's end then follows every row of the epoch, which
        # lets a resumed run append exactly the rows after it.
        for logger in self.loggers:
            logger.log_metrics({**metrics, "epoch": self.current_epoch}, step=self.global_step - 1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a mid-epoch checkpoint carries the epoch's running totals, so a resumed epoch reports all of it
        checkpoint["train_totals"] = self._train_totals().detach().cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        totals = checkpoint.get("train_totals")
        if totals is not None and self.global_rank == 0:  # other processes restart from zero
            self.train_sums = totals.float()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        images, labels = batch
        self.outputs[stage].append((self(images), labels))

    def on_validation_epoch_end(self) -> None:
        self.val_probs, self.val_labels = self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.test_probs, self.test_labels = self._log_epoch("test")

    def _log_epoch(self, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss, accuracy and AUROC over the whole epoch (gathered from every process)."""
        logits = torch.cat([out[0] for out in self.outputs[stage]])
        labels = torch.cat([out[1] for out in self.outputs[stage]])
        self.outputs[stage].clear()
        if self.trainer.world_size > 1:
            from dlops.lifecycle.ddp import all_gather

            logits, labels = all_gather(logits), all_gather(labels)
        probs = self.probabilities(logits)
        task = "binary" if self.binary else "multiclass"
        n = self.hparams.num_classes
        self.log_dict({  # the same on every process (gathered above): sync_dist, as for training's
            f"{stage}_loss": self._loss(logits, labels),
            f"{stage}_acc": accuracy(probs, labels, task=task, num_classes=n),
            f"{stage}_auroc": auroc(probs, labels, task=task) if self.binary else macro_auroc(probs, labels),
        }, sync_dist=True)
        return probs.detach().cpu(), labels.cpu()

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams.optimizer)(self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer)
        # `monitor` (the run's own) is read only by ReduceLROnPlateau
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.monitor}}


def _yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping in YAML file `path` (safe loader: data only); {} for anything else."""
    import yaml

    with open(path) as file:
        data = yaml.safe_load(file)
    return data if isinstance(data, dict) else {}
