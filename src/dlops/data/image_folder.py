"""Images from folders in the reference project's layout: root/{train,val,test}/<class>/*.png."""

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dlops.data.base import InMemoryDataModule, Split
from dlops.errors import ConfigError
from dlops.serve.images import IMAGE_SUFFIXES, ImageError, decode_image

log = logging.getLogger(__name__)


def class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the class folders in one split folder."""
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_split(split_dir: Path, classes: list[str], color_mode: str,
               size: int | None) -> tuple[Split, set[str]]:
    """Decode every image of one split into a uint8 `(N, C, H, W)` tensor (dlops.serve.images, the
    decoder `dlops predict` and `dlops serve` use too); also the image formats it held."""
    arrays, labels, alpha_only, formats = [], [], [], set()
    for label, name in enumerate(classes):
        files = sorted(f for f in (split_dir / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"class folder {split_dir / name} holds no images "
                              f"({', '.join(sorted(IMAGE_SUFFIXES))}).")
        for file in files:
            try:
                pixels, kind, from_alpha = decode_image(file, color_mode, size and (size, size))
            except ImageError as exc:
                raise ConfigError(f"cannot read image {file}: {exc}. Remove or replace the file.") from None
            arrays.append(pixels)
            formats.add(kind)
            if from_alpha:
                alpha_only.append(file)
            labels.append(label)
    if alpha_only:
        log.warning("%d image(s) in %s, e.g. %s, hold their content only in the alpha channel "
                    "(one colour, varying transparency): read from the alpha channel instead",
                    len(alpha_only), split_dir, alpha_only[0])
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ConfigError(
            f"images in {split_dir} differ in size ({', '.join(map(str, sorted(shapes)[:4]))}); "
            f"set datamodule.image_size to resize them all."
        )
    images = torch.from_numpy(np.stack(arrays))
    return Split(images.contiguous(), torch.tensor(labels, dtype=torch.long)), formats


class ImageFolderDataModule(InMemoryDataModule):
    """Images sorted into class folders; without a val/ folder, test/ doubles as validation."""

    def __init__(
        self,
        root: str,
        color_mode: Literal["L", "RGB"] = "L",
        image_size: int | None = None,
        balance: Literal["weight", "undersample"] | None = None,
        batch_size: int = 32,
        seed: int = 0,
        folds: int | None = None,
        fold: int | None = None,
        split_seed: int = 1234,
    ) -> None:
        super().__init__(batch_size, seed, balance, folds, fold, split_seed)
        if color_mode not in ("L", "RGB"):
            raise ConfigError(f"datamodule.color_mode must be 'L' or 'RGB', got {color_mode!r}.")
        self.root, self.color_mode, self.image_size = Path(root), color_mode, image_size
        self.class_names = self._find_classes()
        # the formats its images came in: `dlops serve` opens these (and PNG, JPEG) only
        self.image_formats: set[str] = set()

    def _find_classes(self) -> list[str]:
        if not self.root.is_dir():
            raise ConfigError(
                f"image folder {self.root} does not exist. Set datamodule.root to a folder holding "
                f"train/<class>/ and test/<class>/ (`dlops make-dataset DIR` writes one)."
            )
        found = {}
        for split in ("train", "val", "test"):
            if (self.root / split).is_dir():
                found[split] = class_folders(self.root / split)
        for split in ("train", "test"):
            if not found.get(split):
                raise ConfigError(f"{self.root / split} is missing or has no class folders; "
                                  f"expected {self.root}/{split}/<class>/*.png.")
        for split, names in found.items():
            if names != found["train"]:
                raise ConfigError(
                    f"class folders differ between train and {split} in {self.root}: "
                    f"train has {found['train']}, {split} has {names}. Make them the same."
                )
        if len(found["train"]) < 2:
            raise ConfigError(f"{self.root / 'train'} has one class folder; a classifier needs at least two.")
        return found["train"]

    def load(self) -> tuple[Split, Split, Split]:
        splits = {}
        for split in ("train", "val", "test"):
            if (self.root / split).is_dir():
                splits[split], formats = read_split(self.root / split, self.class_names, self.color_mode,
                                                    self.image_size)
                self.image_formats |= formats
        return splits["train"], splits.get("val", splits["test"]), splits["test"]
