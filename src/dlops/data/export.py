"""Write the bundled digits as PNG files in the image-folder layout."""

import os
from pathlib import Path

import numpy as np

from dlops.errors import ConfigError


def write_image_folder(root: str | Path, per_class: int, test_fraction: float = 0.2,
                       seed: int = 0) -> dict[str, int]:
    """Write `per_class` digits of each class to `root/{train,test}/<digit>/<n>.png`."""
    from PIL import Image

    from dlops.data.mnist import load_bundled

    root = Path(root)
    if not 2 <= per_class <= 500:
        raise ConfigError(f"--per-class must be between 2 and 500 (one training and one test "
                          f"image per digit at least; the bundled set has 500), got {per_class}.")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"--test-fraction must be between 0 and 1, got {test_fraction}.")
    if root.is_symlink() and not root.exists():
        raise ConfigError(f"{root} is a symlink to {os.readlink(root)}, which does not exist; "
                          "choose a new folder (or create the link's target).")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} is a file, not a folder; choose a new folder so nothing is overwritten.")
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} is not empty; choose a new folder so nothing is overwritten.")
    images, labels = load_bundled()
    images, labels = images.numpy()[:, 0], labels.numpy()
    rng = np.random.default_rng(seed)
    n_test = min(max(1, round(per_class * test_fraction)), per_class - 1)  # both splits get images
    counts = {"train": 0, "test": 0}
    for digit in range(10):
        chosen = rng.permutation(np.flatnonzero(labels == digit))[:per_class]
        for i, index in enumerate(chosen):
            split = "test" if i < n_test else "train"
            folder = root / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[index]).save(folder / f"{index:04d}.png")
            counts[split] += 1
    return counts
