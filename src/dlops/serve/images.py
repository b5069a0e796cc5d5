"""The one image decoder: image files to uint8 pixels `(C, H, W)`, as `datamodule=image_folder`
trains on them, `dlops predict` reads them and `dlops serve` answers uploads. numpy and Pillow
only (the serving process has no torch).

The steps, in order: open in one of the allowed formats (the header only), refuse an image over
the pixel cap before decoding it, apply the EXIF orientation, bring 16-bit greyscale to 8 bits
(its high byte, as Pillow reads 16-bit RGB), read a one-colour image whose shape is drawn only in
its alpha channel from that channel, convert to the colour mode (L or RGB), resize to the model's
size (bicubic).
"""

import io
from pathlib import Path
from typing import Any

import numpy as np

# the suffixes `datamodule=image_folder` reads, and the Pillow formats they are opened as
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
FILE_FORMATS = ("BMP", "GIF", "JPEG", "PNG", "TIFF", "WEBP")
# what `dlops serve` always opens; other formats only when the model was trained on them
SERVED_FORMATS = ("JPEG", "PNG")
RESAMPLE = "bicubic"


class ImageError(ValueError):
    """The bytes are not an image the decoder takes; the message says why."""


class TooManyPixels(ImageError):
    """The image's header claims more pixels than the cap: refused before it is decoded."""


def decode_image(source: bytes | Path, color_mode: str, size: tuple[int, int] | None = None,
                 formats: tuple[str, ...] | list[str] = FILE_FORMATS,
                 max_pixels: int | None = None) -> tuple[np.ndarray, str, bool]:
    """uint8 pixels `(C, H, W)` of an image file or its bytes (C = 1 for L, 3 for RGB), resized to
    `size` = (height, width) when given; also its format and whether it was read from its alpha
    channel. `max_pixels` None leaves the cap to Pillow's decompression-bomb limit."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if color_mode not in ("L", "RGB"):
        raise ImageError(f"images decode to L (1 channel) or RGB (3), not {color_mode!r}")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source,
                        formats=list(formats)) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise TooManyPixels(f"{width}x{height} is {width * height} pixels, over the limit of "
                                 f"{max_pixels}; send a smaller image")
            kind = image.format or "?"
            ImageOps.exif_transpose(image, in_place=True)  # a copy (~30 ms a 4000x4000 image) only if rotated
            image, from_alpha = _to_mode(_eight_bit(image), color_mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
            pixels = np.asarray(image, dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageError(f"not an image in an accepted format ({', '.join(sorted(formats))})") from None
    except ImageError:
        raise
    except Exception as exc:  # Pillow's parsers raise many kinds on damaged or crafted files
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__  # truncated, bad chunk, bomb
        raise ImageError(f"not a readable image ({reason})") from None
    return (pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)), kind, from_alpha


def _eight_bit(image: Any) -> Any:
    """16-bit (and 32-bit integer) greyscale as 8-bit L by its high byte; Pillow's own convert
    would clip every value over 255 to white."""
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode == "I":
        wide = np.asarray(image).astype(np.int64).clip(0, 65535)
        return Image.fromarray((wide >> 8).astype(np.uint8), "L")
    return image


def _to_mode(image: Any, color_mode: str) -> tuple[Any, bool]:
    """`image` in `color_mode`, and whether it was read from its alpha channel.

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


def decoder_info(input_shape: list[int] | tuple[int, ...], formats: list[str] | tuple[str, ...]) -> dict:
    """What `dlops serve` needs to decode uploads as training did (model.json's `decoder`)."""
    channels, height, width = input_shape
    return {"color_mode": "L" if channels == 1 else "RGB", "size": [int(height), int(width)],
            "resize": RESAMPLE, "formats": sorted(set(formats)), "exif_orientation": True,
            "alpha": "a one-colour image with varying alpha is read from its alpha channel",
            "sixteen_bit": "high byte"}


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
