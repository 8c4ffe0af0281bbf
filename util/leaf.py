"""The leaf image pipeline: decode an upload, make it upright RGB, crop it square, scale its pixels.

Training (train.py, evaluate.py) imports the same functions, so the pixels the model
learned from and the pixels it is served are produced by one piece of code.
No Flask here: the HTTP layer calls these functions and shapes their answers.
"""

from __future__ import annotations

import io
import re
import time
import warnings
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from util import messages

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
# Pillow keeps every PNG text chunk in memory, up to 1 MB each and 64 MB in all by default: a 63 KB
# file of 60 compressed chunks cost 64 MB at open. Real photos carry a few kB (XMP is the largest).
PngImagePlugin.MAX_TEXT_CHUNK = 256 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = 1024 * 1024
# libjpeg decodes a progressive JPEG one scan at a time over the whole image; thousands of scans
# in a small file cost tens of seconds (libjpeg-turbo issue 284). Encoders write 10 or so.
DEFAULT_MAX_JPEG_SCANS = 100
# A JPEG that libjpeg must hold as full-size coefficients (16 bits each) whatever draft() asks:
# progressive (SOF2/6/10/14), arithmetic-coded (SOF9-15) or made of several scans.
_PROGRESSIVE_SOF = {0xC2, 0xC6, 0xCA, 0xCE}
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_ARITHMETIC_SOF = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Inside entropy-coded data 0xFF is followed by 0x00 (stuffing) or a restart marker; anything else ends it.
_MARKER_AFTER_SCAN = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")


class ImageError(ValueError):
    """The upload is not an image this service can read; the message tells the client why."""

    status_code = 400


class UnsupportedImageFormat(ImageError):
    status_code = 415


class ImageTooLarge(ImageError):
    status_code = 413


class DecodeTimeout(ImageError):
    """The request's deadline passed while its photo was being decoded: the service is busy."""

    status_code = 503

    def __init__(self, message: str = messages.DECODE_TIMEOUT):
        super().__init__(message)


@dataclass(frozen=True)
class JpegLayout:
    """What a JPEG's markers say about its decoding cost, read without decoding it."""

    scans: int = 0
    progressive: bool = False
    arithmetic: bool = False

    @property
    def buffered(self) -> bool:
        """libjpeg keeps full-size coefficients for the whole image (draft mode does not shrink them)."""
        return self.progressive or self.arithmetic or self.scans > 1


def jpeg_layout(data: bytes) -> JpegLayout:
    """Walk a JPEG's top-level markers: its frame type and how many scans it has (EXIF thumbnails not counted)."""
    scans, sof, pos, end = 0, None, 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            break  # not a marker where one must be: the decoder will report the damage
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker == 0xD9:  # end of image
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF and sof is None:
            sof = marker
        pos += 2 + length
        if marker == 0xDA:  # start of scan: skip its entropy-coded data
            scans += 1
            found = _MARKER_AFTER_SCAN.search(data, pos)
            pos = found.start() if found else end
    return JpegLayout(scans, sof in _PROGRESSIVE_SOF, sof in _ARITHMETIC_SOF)


def coefficient_bytes(image: Image.Image, full_size: tuple[int, int]) -> int:
    """Bytes of the full-size DCT coefficient buffer libjpeg holds for a buffered JPEG (2 bytes a coefficient)."""
    layers = getattr(image, "layer", None) or [(0, 1, 1, 0)] * max(1, len(image.getbands()))
    h_max = max(h for _, h, _, _ in layers) or 1
    v_max = max(v for _, _, v, _ in layers) or 1
    width, height = full_size
    total = 0
    for _, h, v, _ in layers:
        blocks_x = -(-width * max(h, 1) // (8 * h_max))
        blocks_y = -(-height * max(v, 1) // (8 * v_max))
        total += blocks_x * blocks_y * 64 * 2
    return total


class _DeadlineReader(io.BytesIO):
    """Upload bytes that refuse to be read past a deadline: Pillow feeds its decoder from read(), 64 kB at a time."""

    def __init__(self, data: bytes, deadline: float | None):
        super().__init__(data)
        self.deadline = deadline

    def read(self, size: int | None = -1) -> bytes:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DecodeTimeout()
        return super().read(size)


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    budget: PixelBudget | None = None,
    timeout: float | None = None,
    deadline: float | None = None,
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS,
) -> Image.Image:
    """Decode upload bytes into an upright RGB image.

    The pixel count is checked from the header before any pixel is decoded. ``min_side``
    lets a JPEG decoder downscale by a power of two while keeping both sides at least that
    long (draft mode), which makes 12-megapixel photos several times cheaper to decode; other
    formats are decoded whole and shrunk by a whole factor at once (``Image.reduce``), as far
    as ``resize_pixels`` would shrink them anyway. With a ``budget``, the decode first reserves
    the bytes it will need (from the header, the upload's own bytes included) and waits up to
    ``timeout`` seconds for them. A JPEG with more than ``max_jpeg_scans`` scans is refused before
    decoding; past the ``deadline`` (a ``time.monotonic()`` value) decoding stops with DecodeTimeout.
    """
    if not data:
        raise ImageError("The uploaded file is empty.")
    if deadline is not None and time.monotonic() > deadline:
        raise DecodeTimeout()
    image = _open(data, deadline)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} = {width * height:,} pixels; "
            f"the limit is {max_pixels:,}. Resize it and try again."
        )
    held = 0
    if image.format in ("JPEG", "MPO"):
        layout = jpeg_layout(data)
        if layout.scans > max_jpeg_scans:
            raise ImageError(messages.too_many_scans(layout.scans, max_jpeg_scans))
        if layout.buffered:
            held = coefficient_bytes(image, image.size)
        if min_side:
            image.draft("RGB", (min_side, min_side))
    need = decode_bytes(image) + held + len(data)
    if deadline is not None:
        timeout = max(0.0, min(timeout if timeout is not None else float("inf"), deadline - time.monotonic()))
    with budget.reserve(need, timeout) if budget is not None else nullcontext():
        try:
            image.load()
        except DecodeTimeout:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _text_chunks_error(exc) or ImageError(f"The {image.format} file is damaged or truncated.") from exc
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


def _open(data: bytes, deadline: float | None = None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(_DeadlineReader(data, deadline), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge("The image declares too many pixels.") from exc
    except UnidentifiedImageError as exc:
        if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
            raise ImageError("The HEIF/AVIF file is damaged or truncated.") from exc
        raise UnsupportedImageFormat(
            f"The file is not an image in a supported format ({', '.join(ACCEPTED_FORMATS)})."
        ) from exc
    except DecodeTimeout:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _text_chunks_error(exc) or ImageError("The image header is damaged.") from exc


def _text_chunks_error(exc: Exception) -> ImageError | None:
    """Pillow's refusal of PNG text chunks past MAX_TEXT_CHUNK / MAX_TEXT_MEMORY, as a 413."""
    if isinstance(exc, ValueError) and "MAX_TEXT" in str(exc):
        return ImageTooLarge(messages.TEXT_CHUNKS_TOO_LARGE)
    return None


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


def scale_pixels(pixels, in_place: bool = False):
    """Map 0..255 pixels to -1..1, the InceptionV3 convention (numpy arrays or tensors).

    ``in_place``: overwrite ``pixels``, a float numpy array, instead of making two new arrays (the
    same arithmetic, so the same values; measured 3x faster at 160 px).
    """
    if in_place:
        pixels *= 1.0 / 127.5
        pixels -= 1.0
        return pixels
    return pixels * (1.0 / 127.5) - 1.0


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """Turn an RGB image into the float32 ``size`` x ``size`` x 3 array the model takes."""
    return scale_pixels(resize_pixels(image, size).astype(np.float32), in_place=True)


def load_pixels(
    data: bytes,
    size: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    budget: PixelBudget | None = None,
    timeout: float | None = None,
    deadline: float | None = None,
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS,
) -> np.ndarray:
    """Decode upload bytes straight to the model's input array (``budget``, ``deadline``: see decode_image)."""
    image = decode_image(
        data,
        max_pixels=max_pixels,
        min_side=size,
        budget=budget,
        timeout=timeout,
        deadline=deadline,
        max_jpeg_scans=max_jpeg_scans,
    )
    return preprocess(image, size)
