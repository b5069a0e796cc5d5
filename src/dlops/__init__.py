"""dlops: Hydra-composed, reproducible PyTorch Lightning experiments.

`dlops.main()` trains from a script of yours as `dlops train` does (see dlops.launch); it is
imported on first use, so `import dlops` stays light.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "main":
        from dlops.launch import main

        return main
    raise AttributeError(f"module 'dlops' has no attribute {name!r}")
