"""The one table of hostile and awkward photos, with the status the service must answer for each.

Used by tests/test_hostile.py (one photo per request), tests/test_predictions.py (many photos
per request: each gets its own status) and bench/soak.py, so all send exactly the same things.
Statuses hold for the default limits and the test app's. Every builder is cheap to call and
returns at most a few hundred kilobytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

from tests.support import (
    bad_tiff,
    declared_png,
    encoded,
    idat_bomb,
    leaf_like,
    many_frame_gif,
    sixteen_bit_png,
    text_chunk_png,
)


@dataclass(frozen=True)
class Payload:
    name: str
    data: bytes
    filename: str
    status: int  # what the service must answer


BUILDERS: dict[str, Callable[[], tuple[bytes, str, int]]] = {
    "png declaring 65535x65535": lambda: (declared_png(65535, 65535, zlib.compress(b"\0" * 100)), "x.png", 413),
    "png declaring 30000x30000": lambda: (declared_png(30000, 30000, zlib.compress(b"\0" * 100)), "x.png", 413),
    "idat bomb 8000x8000": lambda: (idat_bomb(), "bomb.png", 413),
    "gif with 3000 frames": lambda: (many_frame_gif(), "many.gif", 200),
    "jpeg with a zip appended": lambda: (encoded(leaf_like(), "JPEG") + b"PK\x03\x04" + b"\0" * 200, "poly.jpg", 200),
    "gif/javascript polyglot": lambda: (b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00*/=1;alert(1);", "poly.gif", 415),
    "pdf header then jpeg": lambda: (b"%PDF-1.5\n" + encoded(leaf_like(), "JPEG"), "x.pdf", 415),
    "pdf": lambda: (b"%PDF-1.7\n%%EOF", "x.pdf", 415),
    "text": lambda: (b"just some text\n", "notes.txt", 415),
    "html": lambda: (b"<!doctype html><script>alert(1)</script>", "x.html", 415),
    "svg": lambda: (b'<svg xmlns="http://www.w3.org/2000/svg" width="9e9" height="9e9"/>', "x.svg", 415),
    "zip": lambda: (b"PK\x05\x06" + b"\0" * 18, "x.zip", 415),
    "heic header, no image": lambda: (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64, "x.heic", 400),
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
    "png with 60 MB of text chunks": lambda: (text_chunk_png(), "text.png", 413),
    "progressive jpeg": lambda: (encoded(leaf_like((300, 300)), "JPEG", progressive=True), "prog.jpg", 200),
}


def hostile_payloads() -> list[Payload]:
    return [Payload(name, *build()) for name, build in BUILDERS.items()]


def payload(name: str) -> Payload:
    """One payload of the table, by name."""
    return Payload(name, *BUILDERS[name]())
