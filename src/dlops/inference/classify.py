"""What a classifier and an image classifier are to eval, predict and export, and a classifier's
probabilities as one matrix."""

from typing import Any

import torch
from torch import nn


def is_classifier(model: Any) -> bool:
    """A model with class names whose `probabilities(logits)` turns its output into class
    probabilities (dlops' `Classifier`, or a model of any input written like it)."""
    return callable(getattr(model, "probabilities", None)) and "class_names" in getattr(model, "hparams", {})


def is_image_classifier(model: Any) -> bool:
    """A classifier that takes raw image batches: dlops' `Classifier` or one like it (also the
    hyperparameter `input_shape`, (channels, height, width) with 1 or 3 channels)."""
    shape = getattr(model, "hparams", {}).get("input_shape")
    return is_classifier(model) and isinstance(shape, list | tuple) and len(shape) == 3 and shape[0] in (1, 3)


class ClassProbabilities(nn.Module):
    """The classifier's input (raw 0-255 pixels `(N, C, H, W)` for images) in, one probability per
    class `(N, num_classes)` out.

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
