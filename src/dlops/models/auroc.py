"""One-vs-rest AUROC of a multiclass classifier, over the classes where it is defined.

A class's AUROC needs samples of that class and of another. torchmetrics scores a class without
samples as 0 and warns ("No positive samples in targets"), which pulls the macro average down for
a reason that is no fault of the model: a one-batch `debug=fast` run of the ten digits misses
some. Here such a class is left out, of the average and of the curves.
"""

import torch
from torchmetrics.functional.classification import binary_auroc, binary_roc


def defined_classes(labels: torch.Tensor, num_classes: int) -> list[int]:
    """The classes that `labels` holds, when it also holds another class."""
    counts = torch.bincount(labels.long(), minlength=num_classes)
    return [c for c in range(num_classes) if 0 < counts[c] < len(labels)]


def per_class_auroc(probs: torch.Tensor, labels: torch.Tensor) -> dict[int, torch.Tensor]:
    """Class -> one-vs-rest AUROC of `probs` `(N, C)`, for the defined classes."""
    return {c: binary_auroc(probs[:, c], labels == c)
            for c in defined_classes(labels, probs.shape[1])}


def per_class_roc(probs: torch.Tensor, labels: torch.Tensor) -> dict[int, tuple[torch.Tensor, ...]]:
    """Class -> one-vs-rest ROC curve (fpr, tpr, thresholds), for the defined classes."""
    return {c: binary_roc(probs[:, c], labels == c) for c in defined_classes(labels, probs.shape[1])}


def macro_auroc(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean one-vs-rest AUROC over the defined classes (NaN when there is none), as
    torchmetrics' `multiclass_auroc(average="macro")` where every class has samples."""
    scores = list(per_class_auroc(probs, labels).values())
    return torch.stack(scores).mean() if scores else torch.tensor(float("nan"))
