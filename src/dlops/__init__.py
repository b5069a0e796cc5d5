"""dlops: Hydra-composed, reproducible PyTorch Lightning experiments."""

__version__ = "0.1.0"
