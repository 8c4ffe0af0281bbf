"""Hostile and awkward uploads, built in code, with the status the service must answer.

Shared by tests/test_hostile.py and bench/soak.py so both send exactly the same things.
Every builder is cheap to call and returns at most a few hundred kilobytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class Payload:
    name: str
    data: bytes
    filename: str
    status: int  # what the service must answer


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def declared_png(width: int, height: int, idat: bytes) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB, followed by ``idat``."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def idat_bomb(side: int = 8000) -> bytes:
    """A PNG of ``side`` x ``side`` zero pixels: about 190 MB decoded, a few hundred kB compressed."""
    row = b"\0" + b"\0" * (3 * side)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return declared_png(side, side, body)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def leaf_like(size: tuple[int, int] = (96, 96), mode: str = "RGB") -> Image.Image:
    image = Image.new("RGB", size, (40, 140, 50))
    image.paste((200, 190, 60), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    return image if mode == "RGB" else image.convert(mode)


def many_frame_gif(frames: int = 3000) -> bytes:
    first, *rest = [Image.new("P", (16, 16), i % 256) for i in range(frames)]
    return encoded(first, "GIF", save_all=True, append_images=rest, duration=10)


def sixteen_bit_png() -> bytes:
    import numpy as np

    return encoded(Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16), "PNG")


def bad_tiff() -> bytes:
    """A little-endian TIFF header whose first IFD offset points far past the end of the file."""
    return b"II*\x00" + struct.pack("<I", 0x7FFFFFF0) + b"\0" * 32


BUILDERS: dict[str, Callable[[], tuple[bytes, str, int]]] = {
    "png declaring 65535x65535": lambda: (declared_png(65535, 65535, zlib.compress(b"\0" * 100)), "x.png", 413),
    "png declaring 30000x30000": lambda: (declared_png(30000, 30000, zlib.compress(b"\0" * 100)), "x.png", 413),
    "idat bomb 8000x8000": lambda: (idat_bomb(), "bomb.png", 413),
    "gif with 3000 frames": lambda: (many_frame_gif(), "many.gif", 200),
    "jpeg with a zip appended": lambda: (encoded(leaf_like(), "JPEG") + b"PK\x03\x04" + b"\0" * 200, "poly.jpg", 200),
    "gif/javascript polyglot": lambda: (b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00*/=1;alert(1);", "poly.gif", 415),
    "pdf header then jpeg": lambda: (b"%PDF-1.5\n" + encoded(leaf_like(), "JPEG"), "x.pdf", 415),
    "html": lambda: (b"<!doctype html><script>alert(1)</script>", "x.html", 415),
    "svg": lambda: (b'<svg xmlns="http://www.w3.org/2000/svg" width="9e9" height="9e9"/>', "x.svg", 415),
    "zip": lambda: (b"PK\x05\x06" + b"\0" * 18, "x.zip", 415),
    "heic-like": lambda: (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64, "x.heic", 415),
    "0 bytes": lambda: (b"", "empty.jpg", 400),
    "1 byte": lambda: (b"\xff", "one.jpg", 415),
    "jpeg magic only": lambda: (b"\xff\xd8\xff", "x.jpg", 415),
    "truncated jpeg": lambda: (encoded(leaf_like((300, 300)), "JPEG")[:700], "cut.jpg", 400),
    "truncated png": lambda: (encoded(leaf_like((300, 300)), "PNG")[:300], "cut.png", 400),
    "tiff with a bad ifd": lambda: (bad_tiff(), "bad.tif", 415),
    "cmyk jpeg": lambda: (encoded(leaf_like(mode="CMYK"), "JPEG"), "cmyk.jpg", 200),
    "16-bit png": lambda: (sixteen_bit_png(), "deep.png", 200),
    "la png": lambda: (encoded(leaf_like(mode="LA"), "PNG"), "la.png", 200),
    "palette png": lambda: (encoded(leaf_like(mode="P"), "PNG"), "p.png", 200),
    "rgba png": lambda: (encoded(leaf_like(mode="RGBA"), "PNG"), "rgba.png", 200),
    "grayscale png": lambda: (encoded(leaf_like(mode="L"), "PNG"), "l.png", 200),
}


def hostile_payloads() -> list[Payload]:
    return [Payload(name, *build()) for name, build in BUILDERS.items()]
