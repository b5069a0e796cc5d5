"""Image files to pixel arrays the way training reads them (numpy and Pillow only: no torch)."""

import io
from pathlib import Path

import numpy as np

# the suffixes `datamodule=image_folder` reads
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class ImageError(ValueError):
    """The bytes are not an image Pillow can decode."""


def decode_image(source: bytes | Path, input_shape: tuple[int, int, int] | list[int]) -> np.ndarray:
    """uint8 pixels `(C, H, W)` of an image file or its bytes: grayscale for one channel, RGB for
    three (as `datamodule.color_mode`), resized to `(H, W)` if its size differs (as `image_size`)."""
    from PIL import Image, UnidentifiedImageError

    channels, height, width = input_shape
    if channels not in (1, 3):
        raise ImageError(f"the model takes {channels}-channel input; images give 1 (L) or 3 (RGB)")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (width, height):
                image = image.resize((width, height))
            pixels = np.asarray(image, dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can decode (PNG, JPEG, ...)") from None
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:  # truncated, too large
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ImageError(f"not a readable image ({reason})") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def image_files(inputs: list[str]) -> list[Path]:
    """Every image file named in `inputs` or found (recursively, sorted) in the folders named."""
    from dlops.errors import ConfigError

    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConfigError(f"{name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{name} does not exist; give image files or folders of them.")
    return files
