"""Images from folders in the reference project's layout: root/{train,val,test}/<class>/*.png."""

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from dlops.data.base import InMemoryDataModule, Split
from dlops.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the class folders in one split folder."""
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def to_mode(image: "Image.Image", color_mode: str) -> tuple["Image.Image", bool]:
    """`image` in `color_mode` (L or RGB), and whether it was read from its alpha channel.

    Converting drops the alpha channel; an image of one colour whose shape is drawn only in
    alpha (a glyph on a transparent background) would read blank, so its alpha is the image.
    """
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        colour_extrema = rgba.convert("RGB").getextrema()
        low, high = rgba.getchannel("A").getextrema()
        if all(lo == hi for lo, hi in colour_extrema) and low != high:
            return rgba.getchannel("A").convert(color_mode), True
    return image.convert(color_mode), False


def read_split(split_dir: Path, classes: list[str], color_mode: str, size: int | None) -> Split:
    """Decode every image of one split into a uint8 `(N, C, H, W)` tensor."""
    from PIL import Image, UnidentifiedImageError

    arrays, labels, alpha_only = [], [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in (split_dir / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"class folder {split_dir / name} holds no images "
                              f"({', '.join(sorted(IMAGE_SUFFIXES))}).")
        for file in files:
            try:
                with Image.open(file) as image:
                    image, from_alpha = to_mode(image, color_mode)
                    if size is not None and image.size != (size, size):
                        image = image.resize((size, size))
                    arrays.append(np.asarray(image, dtype=np.uint8))
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
                raise ConfigError(f"cannot read image {file}: {exc}. Remove or replace the file.") from None
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
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    return Split(images.contiguous(), torch.tensor(labels, dtype=torch.long))


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
        read = lambda split: read_split(self.root / split, self.class_names, self.color_mode, self.image_size)  # noqa: E731
        train, test = read("train"), read("test")
        val = read("val") if (self.root / "val").is_dir() else test
        return train, val, test
