"""One-vs-rest AUROC over the classes where it is defined (dlops.models.auroc)."""

import warnings

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc, multiclass_auroc

from dlops.callbacks.evaluation import evaluate
from dlops.models.auroc import defined_classes, macro_auroc


def scores(n: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=generator)
    logits = torch.randn(n, classes, generator=generator) + 2 * torch.nn.functional.one_hot(labels, classes)
    return logits.softmax(1), labels


def test_with_every_class_present_it_is_torchmetrics_macro_auroc():
    probs, labels = scores(500, 10)
    assert defined_classes(labels, 10) == list(range(10))
    expected = multiclass_auroc(probs, labels, num_classes=10, average="macro")
    assert macro_auroc(probs, labels).item() == pytest.approx(expected.item(), abs=1e-6)


def test_a_class_without_samples_is_left_out_silently_not_scored_zero():
    probs, labels = scores(300, 10)
    labels[labels == 4] = 5  # no sample of class 4 (a one-batch run of ten digits misses some)
    present = [c for c in range(10) if c != 4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchmetrics would warn "No positive samples in targets"
        value = macro_auroc(probs, labels).item()
        result = evaluate(probs, labels, [str(c) for c in range(10)])
    mean = sum(binary_auroc(probs[:, c], labels == c).item() for c in present) / len(present)
    assert value == pytest.approx(mean, abs=1e-6)
    assert "4" not in result["auc"] and "4" not in result["roc"] and len(result["roc"]) == 9
    assert result["confusion_matrix"][4] == [0] * 10  # the matrix keeps every class


def test_labels_of_one_class_have_no_auroc():
    probs, _ = scores(20, 3)
    assert torch.isnan(macro_auroc(probs, torch.zeros(20, dtype=torch.long)))
