"""Where kept photos live: a local folder (the default) or an S3 bucket shared by replicas.

Every photo is re-encoded before it is kept: decoded upright, shrunk to at most ``MAX_SIDE`` pixels
and saved as a new JPEG, so nothing of the original file (EXIF, GPS position, camera, maker notes,
embedded thumbnails) survives.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from PIL import Image

from util import leaf

MAX_SIDE = 1024  # pixels on the long side: enough to train on (the model reads 160-299 px), small to keep
JPEG_QUALITY = 90
CONTENT_TYPE = "image/jpeg"


def reencode(data: bytes, max_pixels: int = leaf.DEFAULT_MAX_PIXELS) -> bytes:
    """Decode an upload the way the service does and save it anew: JPEG, at most MAX_SIDE px, no metadata."""
    image = leaf.decode_image(data, max_pixels=max_pixels, min_side=MAX_SIDE)
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    clean = Image.new("RGB", image.size)  # a fresh image carries no info dict (exif, icc, xmp) from the upload
    clean.paste(image)
    buffer = io.BytesIO()
    clean.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


class PhotoStore(Protocol):
    """Photos by key; ``delete`` of a missing key is not an error (deleting twice is deleting)."""

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...


class LocalPhotoStore:
    """Photos as files in one folder; written to a temporary name and renamed, so a reader never sees half."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalPhotoStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)  # here, not at start: a bad folder fails writes, not the service
        descriptor, temporary = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path(key))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()


class S3PhotoStore:
    """Photos as objects under ``s3://bucket/prefix/``, through boto3's usual credential chain.

    ``AWS_ENDPOINT_URL`` points it at another S3 API (MinIO, a test server), as boto3 reads it itself.
    """

    def __init__(self, bucket: str, prefix: str = "", client=None):
        import boto3  # only deployments that keep photos in S3 need boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or boto3.client("s3")

    def __repr__(self) -> str:
        return f"S3PhotoStore('s3://{self.bucket}/{self.prefix}')"

    def object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.object_key(key), Body=data, ContentType=CONTENT_TYPE)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))["Body"].read()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True


def open_photo_store(location: str) -> PhotoStore:
    """``s3://bucket/prefix`` -> S3PhotoStore; anything else is a local folder."""
    if location.startswith("s3://"):
        parsed = urlparse(location)
        if not parsed.netloc:
            raise ValueError(f"PLANTNET_PHOTO_STORE={location!r} names no bucket: write s3://bucket/prefix")
        return S3PhotoStore(parsed.netloc, parsed.path)
    return LocalPhotoStore(Path(location))
