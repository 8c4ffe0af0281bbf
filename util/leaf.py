"""The leaf image pipeline: decode an upload, make it upright RGB, crop it square, scale its pixels.

Training (train.py, evaluate.py) imports the same functions, so the pixels the model
learned from and the pixels it is served are produced by one piece of code.
No Flask here: the HTTP layer calls these functions and shapes their answers.
"""

from __future__ import annotations

import io
import warnings
from contextlib import nullcontext, suppress
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from util.budget import PixelBudget

try:  # iPhones save HEIC; pillow-heif teaches Pillow to read it (Pillow reads AVIF itself)
    import pillow_heif

    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False, decode_threads=1)
except ImportError:  # pragma: no cover - a requirement; without it HEIC is simply not accepted
    pillow_heif = None

# Raster formats people upload. Pillow opens the MPO files many phone cameras write as JPEG.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "HEIF", "AVIF")
# ISO-BMFF brands of HEIF and AVIF files (the ftyp box): such a file that cannot be opened is damaged.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis")
# resize_pixels shrinks by whole factors while the image stays this many times the target size.
REDUCING_GAP = 3.0
# Extra copies of the image these decoders hold while decoding, on top of Pillow's own (measured
# at 36 MP: WebP 16 bytes a pixel, AVIF 9, HEIF 8, PNG 4); the others decode straight into it.
_DECODER_COPIES = {"WEBP": 3, "HEIF": 1, "AVIF": 1}
DEFAULT_MAX_PIXELS = 40_000_000
# Background for transparent pixels: close to the plain light backdrop of lab leaf photos.
TRANSPARENT_BACKGROUND = (255, 255, 255)


class ImageError(ValueError):
    """The upload is not an image this service can read; the message tells the client why."""

    status_code = 400


class UnsupportedImageFormat(ImageError):
    status_code = 415


class ImageTooLarge(ImageError):
    status_code = 413


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    budget: PixelBudget | None = None,
    timeout: float | None = None,
) -> Image.Image:
    """Decode upload bytes into an upright RGB image.

    The pixel count is checked from the header before any pixel is decoded. ``min_side``
    lets a JPEG decoder downscale by a power of two while keeping both sides at least that
    long (draft mode), which makes 12-megapixel photos several times cheaper to decode; other
    formats are decoded whole and shrunk by a whole factor at once (``Image.reduce``), as far
    as ``resize_pixels`` would shrink them anyway. With a ``budget``, the decode first reserves
    the bytes it will need (from the header) and waits up to ``timeout`` seconds for them.
    """
    if not data:
        raise ImageError("The uploaded file is empty.")
    image = _open(data)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,}. Resize it and try again."
        )
    if min_side and image.format in ("JPEG", "MPO"):
        image.draft("RGB", (min_side, min_side))
    need = decode_bytes(image)
    with budget.reserve(need, timeout) if budget is not None else nullcontext():
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"The {image.format} file is damaged or truncated.") from exc
        image = _upright(image)
        if min_side:
            image = _reduced(image, min_side)
        image = to_rgb(image)
        if min_side:
            image = _reduced(image, min_side)
    if budget is not None:
        budget.released(need)
    return image


def decode_bytes(image: Image.Image) -> int:
    """Peak bytes a decode of ``image`` (opened, not loaded) needs: its pixels, one RGB copy, decoder buffers."""
    width, height = image.size
    stored = 1 if image.mode in ("1", "L", "P") else 2 if image.mode.startswith("I;16") else 4
    return width * height * (stored * (1 + _DECODER_COPIES.get(image.format or "", 0)) + 4)


def _reduced(image: Image.Image, min_side: int) -> Image.Image:
    """Shrink by the whole factor ``resize_pixels`` would apply, keeping both sides >= ``min_side``."""
    factor = int(min(image.size) / min_side / REDUCING_GAP)
    if factor < 2:
        return image
    try:
        return image.reduce(factor)
    except ValueError:  # modes reduce cannot do (P, 1, I;16): reduced after conversion to RGB
        return image


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge("The image declares too many pixels.") from exc
    except UnidentifiedImageError as exc:
        if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
            raise ImageError("The HEIF/AVIF file is damaged or truncated.") from exc
        raise UnsupportedImageFormat(
            f"The file is not an image in a supported format ({', '.join(ACCEPTED_FORMATS)})."
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError("The image header is damaged.") from exc


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation in place (no copy when upright); a damaged EXIF block leaves it as stored."""
    with suppress(Exception):  # EXIF is optional metadata, never a reason to refuse
        ImageOps.exif_transpose(image, in_place=True)
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is laid over a white background."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return Image.fromarray(_wide_to_uint8(np.asarray(image))).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*TRANSPARENT_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise UnsupportedImageFormat(f"Images in colour mode {image.mode} are not supported.") from exc


def _wide_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Scale 16-bit, 32-bit or float grey levels down to 0..255."""
    pixels = pixels.astype(np.float64)
    top = float(pixels.max(initial=0.0))
    if top <= 1.0:
        scale = 255.0
    elif top <= 255.0:
        scale = 1.0
    else:
        scale = 255.0 / 65535.0
    return np.clip(pixels * scale, 0, 255).astype(np.uint8)


def center_square(image: Image.Image) -> Image.Image:
    """Crop the largest centred square: phone photos are 4:3, the model learned from squares."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def resize_pixels(image: Image.Image, size: int) -> np.ndarray:
    """Center-crop and resize an RGB image to a ``size`` x ``size`` x 3 uint8 array."""
    square = center_square(image)
    if square.size != (size, size):
        square = square.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(square, dtype=np.uint8)


def scale_pixels(pixels):
    """Map 0..255 pixels to -1..1, the InceptionV3 convention (numpy arrays or tensors)."""
    return pixels * (1.0 / 127.5) - 1.0


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """Turn an RGB image into the float32 ``size`` x ``size`` x 3 array the model takes."""
    return scale_pixels(resize_pixels(image, size).astype(np.float32))


def load_pixels(
    data: bytes,
    size: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    budget: PixelBudget | None = None,
    timeout: float | None = None,
) -> np.ndarray:
    """Decode upload bytes straight to the model's input array (``budget``: see decode_image)."""
    image = decode_image(data, max_pixels=max_pixels, min_side=size, budget=budget, timeout=timeout)
    return preprocess(image, size)
