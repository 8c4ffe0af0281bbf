"""What tests and benchmarks share: paths, image builders, multipart bodies, uploads, server processes.

Tests get these through fixtures (tests/conftest.py) or import them; bench/ imports them too,
never the reverse.
"""

from __future__ import annotations

import io
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything imports TensorFlow

import numpy as np
import pytest
import requests
from flask import Flask
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_images"
BIG_PHOTO = SAMPLES / "plantnet_original_sample.jpg"  # the original 12-megapixel phone photo
SHIPPED_MODEL = ROOT / "plantnet"
TINY_DATA = Path(__file__).parent / "data" / "tiny"
TINY_LABELS_TSV = Path(__file__).parent / "data" / "tiny-labels.tsv"
TINY_OUTLIERS = Path(__file__).parent / "data" / "ood"  # photos that are not leaves: near and far
LEGACY_FIXTURE = Path(__file__).parent / "fixtures" / "plantnet-original"
TINY_LABELS = ("Tomato_healthy", "Tomato_Late blight", "Apple_scab")
TINY_METADATA = {"name": "tiny-test-model", "version": "0.0.1"}
TINY_SIZE = 32
PREDICT = "/Diagnosis/prediction"
PREDICTIONS = "/Diagnosis/predictions"
PLANT = "/Diagnosis/plant"
MODEL = "/Diagnosis/model"
# The limits of the test app (the `app` fixture), small enough to cross in a test.
TEST_LIMITS = {
    "max_upload_bytes": 2 * 1024 * 1024,
    "max_request_bytes": 5 * 1024 * 1024,
    "max_pixels": 5_000_000,
}


# --- models and apps ---------------------------------------------------------------------------


def build_tiny_model(size: int = TINY_SIZE, classes: int = len(TINY_LABELS), seed: int = 7):
    """A small real CNN whose answer depends on the image: enough to test serving end to end."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny")


@contextmanager
def serving(model_dir: Path, cache_dir: Path, **settings) -> Iterator[Flask]:
    """An app on ``model_dir``, warmed up; its inference thread is stopped on exit."""
    from application import create_app
    from util.service import EXTENSION

    app = create_app({"TESTING": True, "SETTINGS": {"model_dir": model_dir, "cache_dir": cache_dir, **settings}})
    try:
        assert app.extensions[EXTENSION].ready.wait(120), "the model did not warm up"
        yield app
    finally:
        app.extensions[EXTENSION].close()


class Diagnoser:
    """Upload photos the way clients do, so a test body is one call and one assert."""

    def __init__(self, client):
        self.client = client

    def one(self, data: bytes, filename: str = "leaf.jpg", **fields):
        """POST one photo to /Diagnosis/prediction."""
        return self.client.post(PREDICT, data={"image": (io.BytesIO(data), filename), **fields})

    def many(self, photos: Sequence[tuple[str, bytes]], **fields):
        """POST (file name, bytes) photos to /Diagnosis/predictions, in order."""
        return self.client.post(PREDICTIONS, data={"images": [(io.BytesIO(d), n) for n, d in photos], **fields})

    def plant(self, photos: Sequence[tuple[str, bytes]], **fields):
        """POST (file name, bytes) photos of one plant to /Diagnosis/plant, in order."""
        return self.client.post(PLANT, data={"images": [(io.BytesIO(d), n) for n, d in photos], **fields})


# --- sample photos -------------------------------------------------------------------------------


def sample_bytes(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def expected_samples() -> list[tuple[str, str]]:
    """(file name, true label) for each leaf photo in sample_images/labels.tsv."""
    rows = (SAMPLES / "labels.tsv").read_text().splitlines()[1:]
    return [tuple(row.split("\t")[:2]) for row in rows if row.strip()]


def leaf_samples() -> list[tuple[str, bytes]]:
    """(file name, bytes) of the 256 px leaf photos in sample_images/ (not the 12-megapixel one)."""
    return [(p.name, p.read_bytes()) for p in sorted(SAMPLES.glob("*.jpg")) if p != BIG_PHOTO]


# --- images built in memory ----------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def image_bytes(mode: str = "RGB", size=(64, 48), fmt: str = "PNG", color=None, **save) -> bytes:
    """Encode a synthetic image in memory: a gradient, so resizing and orientation are visible."""
    width, height = size
    ramp = np.linspace(0, 255, width * height, dtype=np.float64).reshape(height, width)
    rgb = np.stack([ramp, ramp[::-1], np.full_like(ramp, 90)], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgb, "RGB") if color is None else Image.new("RGB", size, color)
    if mode != "RGB":
        image = image.convert(mode)
    return encoded(image, fmt, **save)


def leaf_like(size: tuple[int, int] = (96, 96), mode: str = "RGB") -> Image.Image:
    image = Image.new("RGB", size, (40, 140, 50))
    image.paste((200, 190, 60), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    return image if mode == "RGB" else image.convert(mode)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def declared_png(width: int, height: int, idat: bytes = zlib.compress(b"\0" * 64)) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB, followed by ``idat``."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def idat_bomb(side: int = 8000) -> bytes:
    """A PNG of ``side`` x ``side`` zero pixels: about 190 MB decoded, a few hundred kB compressed."""
    row = b"\0" + b"\0" * (3 * side)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return declared_png(side, side, body)


def text_chunk_png(chunks: int = 60, each: int = 1024 * 1024) -> bytes:
    """A small PNG carrying ``chunks`` zTXt chunks of ``each`` bytes once decompressed: 63 kB, 60 MB of text."""
    base = image_bytes(size=(64, 48))
    text = zlib.compress(b"a" * (each - 1), 9)
    extra = b"".join(png_chunk(b"zTXt", b"k%d\0\0" % i + text) for i in range(chunks))
    return base[:33] + extra + base[33:]  # after the signature and IHDR, before IDAT


def many_frame_gif(frames: int = 3000) -> bytes:
    first, *rest = [Image.new("P", (16, 16), i % 256) for i in range(frames)]
    return encoded(first, "GIF", save_all=True, append_images=rest, duration=10)


def animated_gif() -> bytes:
    frames = [Image.new("P", (40, 40), i * 40) for i in range(5)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def sixteen_bit_png() -> bytes:
    """A 64x64 16-bit grey ramp over the whole 0..65535 range."""
    return encoded(Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16), "PNG")


def bad_tiff() -> bytes:
    """A little-endian TIFF header whose first IFD offset points far past the end of the file."""
    return b"II*\x00" + struct.pack("<I", 0x7FFFFFF0) + b"\0" * 32


def exif_rotated_jpeg() -> bytes:
    """A 60x30 landscape JPEG whose EXIF says 'rotate 90 degrees clockwise' (orientation 6)."""
    image = Image.new("RGB", (60, 30), (200, 30, 30))
    image.paste((30, 30, 200), (0, 0, 30, 30))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(image, "JPEG", exif=exif.tobytes(), quality=95)


# --- HTTP bodies -------------------------------------------------------------------------------------


def multipart_body(parts: Sequence[tuple[str, str | None, bytes]], boundary: str = "XyZ") -> bytes:
    """Encode (field, file name or None for a plain field, bytes) parts as a multipart/form-data body."""
    body = b""
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename is not None else "")
        kind = "Content-Type: application/octet-stream\r\n" if filename is not None else ""
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


# --- server processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def procfile_web_command() -> list[str]:
    """The Procfile's web command."""
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    return line.split(":", 1)[1].split()


class Server:
    """A command (by default the Procfile's web command) serving on a free 127.0.0.1 port.

    Its program is taken from this Python's environment. ``output`` is where its stdout and
    stderr go: PIPE to read them (short runs), DEVNULL for long ones that would fill a pipe.
    """

    def __init__(
        self,
        env: dict[str, str],
        command: list[str] | None = None,
        output: int = subprocess.PIPE,
        root: Path = ROOT,
        health: str = "/health",
        name: str = "the service",
    ):
        program, *args = command or procfile_web_command()
        self.health, self.name = health, name  # what answers 200 once it serves; what errors call it
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name(program)), *args],
            cwd=root,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env, "HOST": "127.0.0.1", "PORT": str(self.port)},
            stdout=output,
            stderr=output,
            text=True,
        )

    def wait_healthy(self, limit: float = 120) -> float:
        """Wait for GET of its health path to answer 200; return the seconds since start."""
        while time.monotonic() - self.started < limit:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read() if self.process.stderr else ""
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {stderr}")
            try:
                if requests.get(f"{self.url}{self.health}", timeout=2).status_code == 200:
                    return time.monotonic() - self.started
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} was not healthy within {limit:.0f} s")

    def worker_rss_mb(self) -> float:
        """Largest VmRSS of the process and its children: util.server is one process; a compared server may fork."""
        sizes = []
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            except OSError:
                continue
            own = status.parent.name == str(self.process.pid)
            if (own or fields.get("PPid", "").strip() == str(self.process.pid)) and "VmRSS" in fields:
                sizes.append(int(fields["VmRSS"].split()[0]) / 1024)
        return max(sizes, default=0.0)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (graceful), then kill if it does not exit in time; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def model_env(model_dir: Path, cache_dir: Path | None = None, **env: str) -> dict[str, str]:
    """Environment variables that point a server at a model (and an OpenVINO cache)."""
    paths = {"PLANTNET_MODEL_DIR": str(Path(model_dir).resolve())}
    if cache_dir is not None:
        paths["PLANTNET_CACHE_DIR"] = str(cache_dir)
    return {**paths, **env}


# -- S3 through moto's server on 127.0.0.1 (boto3 over real HTTP, no patching) ------------------------
AWS_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@contextmanager
def moto_s3(objects: dict[str, dict[str, bytes]]) -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1 holding ``{bucket: {key: bytes}}``; yield its endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    existing = {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}  # moto's store is per process
    for bucket, keys in objects.items():
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
        for key, data in keys.items():
            s3.put_object(Bucket=bucket, Key=key, Body=data)
    try:
        yield endpoint
    finally:
        server.stop()


# What bulk classification reads from S3 (tests/test_bulk.py, tests/test_bulk_ray.py): moto's servers in one
# process share one store, so a bucket of its own, not the client tests' "leaves".
NOT_AN_IMAGE = b"this is not an image"
BULK_BUCKET = "bulk-leaves"


def bulk_s3_objects() -> dict[str, dict[str, bytes]]:
    """Three leaves and a broken file under field-7/, one more leaf under field-8/."""
    keys = {f"field-7/{name}": data for name, data in leaf_samples()[:3]}
    return {BULK_BUCKET: {**keys, "field-7/broken.png": NOT_AN_IMAGE, "field-8/other.jpg": leaf_samples()[0][1]}}


def assert_same_answer(ours, theirs, tolerance: float = 1e-4, where: str = "diagnosis") -> None:
    """Equal JSON, except floats may differ by the engine's precision (batches of other sizes)."""
    if isinstance(theirs, float) and isinstance(ours, (int, float)):
        assert math.isclose(ours, theirs, abs_tol=tolerance), f"{where}: {ours} != {theirs}"
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and ours.keys() == theirs.keys(), f"{where}: {ours} != {theirs}"
        for key in theirs:
            assert_same_answer(ours[key], theirs[key], tolerance, f"{where}.{key}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), f"{where}: {ours} != {theirs}"
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same_answer(a, b, tolerance, f"{where}[{index}]")
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"


def use_fake_aws(patch: pytest.MonkeyPatch, directory: Path, endpoint: str | None = None) -> None:
    """Point boto3's standard credential chain at test credentials (and ``endpoint``); nothing of the machine's."""
    for name in AWS_UNSET:
        patch.delenv(name, raising=False)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(directory / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(directory / "no-credentials"),
    }
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    for name, value in env.items():
        patch.setenv(name, value)


# -- PostgreSQL: a throwaway cluster on 127.0.0.1 (Debian's `postgresql`; .ci/run installs it) ----------
POSTGRES_USER = "postgres"  # initdb and the server refuse to run as root: as root, run them as this user


def postgres_binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin; None if absent."""
    import shutil

    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


def postgres_unavailable() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None when it can."""
    import pwd

    if postgres_binaries() is None:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            return f"running as root and there is no {POSTGRES_USER!r} user to run PostgreSQL as"
    return None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a fresh PostgreSQL cluster (trust auth, 127.0.0.1, a free port); yield the URL of its postgres db."""
    import pwd
    import shutil
    import tempfile

    bin_dir = postgres_binaries()
    assert bin_dir is not None, postgres_unavailable()
    root = Path(tempfile.mkdtemp(prefix="plantnet-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam(POSTGRES_USER)
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", POSTGRES_USER, "--"]
    data, port = root / "data", free_port()
    run = lambda *args: subprocess.run([*prefix, *args], check=True, capture_output=True, text=True)  # noqa: E731
    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "-t", "60", "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def fresh_postgres_database(server_url: str, name: str) -> str:
    """Create an empty database ``name`` on the server; its SQLAlchemy URL."""
    import psycopg

    plain = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


def s3_client(endpoint: str):
    """A boto3 S3 client on ``endpoint`` with test credentials, touching nothing of the machine's."""
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )


def exif_jpeg(size: tuple[int, int] = (2000, 1500)) -> bytes:
    """A leaf-green JPEG that carries EXIF with a camera maker and a GPS position, as phone photos do."""
    image = Image.new("RGB", size, (40, 130, 50))
    exif = image.getexif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0110] = "PhoneModel 12"  # Model
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}  # GPSInfo: latitude, longitude
    return encoded(image, "JPEG", exif=exif, quality=90)
