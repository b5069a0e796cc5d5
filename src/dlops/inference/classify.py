"""What an image classifier is to eval, predict and export, and its probabilities as one matrix."""

from typing import Any

import torch
from torch import nn


def is_image_classifier(model: Any) -> bool:
    """A model that takes raw image batches and has class names: dlops' `Classifier` or one like it
    (`probabilities(logits)` and hyperparameters `class_names`, `input_shape`)."""
    hparams = getattr(model, "hparams", {})
    return callable(getattr(model, "probabilities", None)) and all(
        key in hparams for key in ("class_names", "input_shape"))


class ClassProbabilities(nn.Module):
    """Raw 0-255 pixels `(N, C, H, W)` in, one probability per class `(N, num_classes)` out.

    The classifier's own preprocessing (scale and normalisation) runs inside its forward; a binary
    classifier's single P(positive) becomes the two columns [1 - p, p], in class-name order.
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.binary = len(classifier.hparams.class_names) == 2

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        probs = self.classifier.probabilities(self.classifier(pixels))
        if self.binary and probs.ndim == 1:
            return torch.stack([1 - probs, probs], dim=-1)
        return probs
