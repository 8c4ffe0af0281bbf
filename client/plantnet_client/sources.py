"""Turn what the user names (files, folders, http(s) URLs, ``s3://`` prefixes) into photos.

Expanding a source only lists it: every :class:`Photo` reads its bytes when :meth:`Photo.read` is
called, so a folder or bucket of 200,000 photos never sits in memory. A source that cannot be
listed (a missing path, an unreachable bucket) becomes one photo whose ``read`` raises
:class:`SourceError`, so it is reported like any other failed photo instead of stopping the run.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import httpx

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif", ".avif"}
)
DEFAULT_MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # 20 MiB

_CHUNK = 64 * 1024


class SourceError(Exception):
    """A photo or source could not be read; ``str(error)`` says why."""


@dataclass(frozen=True)
class Photo:
    """One photo to diagnose: where it comes from, the file name to upload, and how to read it."""

    source: str
    name: str
    opener: Callable[[], bytes] = field(repr=False, compare=False)

    def read(self) -> bytes:
        """The photo's bytes; raises :class:`SourceError` when they cannot be had."""
        try:
            return self.opener()
        except SourceError:
            raise
        except OSError as error:
            raise SourceError(f"cannot read {self.source}: {error.strerror or error}") from error

    @property
    def content_type(self) -> str:
        return mimetypes.guess_type(self.name)[0] or "application/octet-stream"


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def is_s3(source: str) -> bool:
    return source.lower().startswith("s3://")


def _failing(source: str, message: str) -> Photo:
    def fail() -> bytes:
        raise SourceError(message)

    return Photo(source, PurePosixPath(source).name or "photo", fail)


class Expander:
    """Expands sources into photos; holds what reading needs (an HTTP client, an S3 client).

    ``http`` downloads URL sources (the server never fetches URLs); ``s3_client`` is any boto3 S3
    client, made on first use from the standard credential chain with ``endpoint_url`` (else
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``) when not given.
    """

    def __init__(
        self,
        http: httpx.Client | None = None,
        *,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        s3_client: Any = None,
        endpoint_url: str | None = None,
        s3_page_size: int | None = None,
    ) -> None:
        self._http = http
        self._own_http = http is None
        self.max_download_bytes = max_download_bytes
        self._s3 = s3_client
        self.endpoint_url = endpoint_url
        self.s3_page_size = s3_page_size  # keys per listing page (S3's own default, 1000, when None)

    # -- life cycle -------------------------------------------------------------------------
    def close(self) -> None:
        if self._own_http and self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> Expander:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, connect=10.0))
        return self._http

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = make_s3_client(self.endpoint_url)
        return self._s3

    # -- expansion --------------------------------------------------------------------------
    def expand(self, sources: Iterable[Any]) -> Iterator[Photo]:
        """Every photo of every source, lazily, in the order given (folders and prefixes sorted)."""
        if isinstance(sources, (str, bytes, os.PathLike, Photo)) or hasattr(sources, "read"):
            sources = [sources]
        for source in sources:
            yield from self.expand_one(source)

    def expand_one(self, source: Any) -> Iterator[Photo]:
        if isinstance(source, Photo):
            yield source
        elif isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            yield Photo("<bytes>", "photo", lambda: data)
        elif hasattr(source, "read"):
            yield _file_object(source)
        elif isinstance(source, os.PathLike):
            yield from local_photos(os.fspath(source))
        elif isinstance(source, str):
            if is_url(source):
                yield self.url_photo(source)
            elif is_s3(source):
                yield from self.s3_photos(source)
            else:
                yield from local_photos(source)
        else:
            raise TypeError(f"cannot diagnose a {type(source).__name__}: give a path, URL, s3:// URI or bytes")

    # -- URLs -------------------------------------------------------------------------------
    def url_photo(self, url: str) -> Photo:
        name = unquote(PurePosixPath(urlsplit(url).path).name) or "photo"
        return Photo(url, name, lambda: self.download(url))

    def download(self, url: str) -> bytes:
        """Fetch ``url``, streamed, refusing anything larger than ``max_download_bytes``."""
        limit = self.max_download_bytes
        try:
            with self.http.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise SourceError(f"download failed: HTTP {response.status_code} from {url}")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise SourceError(f"download refused: {url} is {int(declared)} bytes, over the {limit}-byte limit")
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise SourceError(f"download refused: {url} is over the {limit}-byte limit")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as error:
            raise SourceError(f"download failed: {url}: {error}") from error

    # -- S3 ---------------------------------------------------------------------------------
    def s3_photos(self, uri: str) -> Iterator[Photo]:
        """``s3://bucket/key`` is that object; ``s3://bucket/prefix`` every image below the prefix.

        A prefix is read as a folder: ``s3://b/photos`` lists ``photos/...`` but not ``photos2/``.
        """
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            yield _failing(uri, f"not an S3 URI (s3://bucket/prefix): {uri}")
            return
        try:
            s3 = self.s3
            folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
            paginator = s3.get_paginator("list_objects_v2")
            pages = {"PageSize": self.s3_page_size} if self.s3_page_size else {}
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig=pages):
                for item in page.get("Contents", ()):
                    key = item["Key"]
                    # s3://bucket/key names that one object, whatever its extension
                    named = key == prefix and not prefix.endswith("/")
                    inside = key.startswith(folder) and not key.endswith("/") and is_image_name(key)
                    if named or inside:
                        yield self.s3_photo(bucket, key)
        except SourceError as error:
            yield _failing(uri, str(error))
        except Exception as error:  # noqa: BLE001 - botocore's errors are many; each becomes a failed source
            yield _failing(uri, f"cannot list {uri}: {error}")

    def s3_photo(self, bucket: str, key: str) -> Photo:
        def read() -> bytes:
            try:
                return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except Exception as error:
                raise SourceError(f"cannot read s3://{bucket}/{key}: {error}") from error

        return Photo(f"s3://{bucket}/{key}", PurePosixPath(key).name, read)


def make_s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client from the standard credential chain, for AWS or any S3-compatible store."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as error:
        raise SourceError("s3:// sources need boto3: pip install 'plantnet-client[s3]'") from error
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32)
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def local_photos(path: str) -> Iterator[Photo]:
    """A file is one photo, whatever its extension; a folder is its image files, recursively, sorted.

    Hidden files and folders (names starting with ``.``) are skipped inside folders.
    """
    root = Path(path)
    if root.is_file():
        yield _file_photo(path)
    elif root.is_dir():
        found = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if not name.startswith(".") and is_image_name(name):
                    full = os.path.join(folder, name)
                    found.append((Path(full).relative_to(root).parts, full))
        for _, full in sorted(found):
            yield _file_photo(full)
    else:
        yield _failing(path, f"no such file or folder: {path}")


def _file_photo(path: str) -> Photo:
    return Photo(path, os.path.basename(path), lambda: Path(path).read_bytes())


def _file_object(stream: IO[bytes]) -> Photo:
    name = getattr(stream, "name", None)
    name = name if isinstance(name, str) and name else "<stream>"
    data = stream.read()
    if isinstance(data, str):
        raise TypeError("open the photo in binary mode ('rb')")
    return Photo(name, os.path.basename(name) if name != "<stream>" else "photo", lambda: data)
