"""Plain `nn.Module` nets. Each takes the input shape `(C, H, W)` and the number of outputs."""

from collections.abc import Sequence

from torch import nn


class MLP(nn.Sequential):
    """The reference project's net: flatten, then Linear + ReLU per hidden size, then a linear output."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden_sizes: Sequence[int] = (100,),
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = input_shape[0] * input_shape[1] * input_shape[2]
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_outputs))
        super().__init__(*layers)


class CNN(nn.Sequential):
    """Conv blocks (3x3 conv, ReLU, 2x2 max-pool) then one hidden dense layer."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        channels: Sequence[int] = (32, 64),
        hidden_size: int = 128,
        dropout: float = 0.25,
    ) -> None:
        layers: list[nn.Module] = []
        in_channels, height, width = input_shape
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            in_channels, height, width = out_channels, height // 2, width // 2
        layers += [
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(in_channels * height * width, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, num_outputs),
        ]
        super().__init__(*layers)
