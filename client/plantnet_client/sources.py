"""Turn what the user names (files, folders, http(s) URLs, ``s3://`` prefixes) into photos.

Expanding a source only lists it: every :class:`Photo` reads its bytes when :meth:`Photo.read` is
called, so a folder or bucket of 200,000 photos never sits in memory. A source that cannot be
listed (a missing path, an unreachable bucket) becomes one photo whose ``read`` raises
:class:`SourceError`, so it is reported like any other failed photo instead of stopping the run.
"""

from __future__ import annotations

import ipaddress
import mimetypes
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import httpx

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif", ".avif"}
)
DEFAULT_MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # 20 MiB: the most read of any one photo (URL, file or S3 object)
MAX_REDIRECTS = 5

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
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``) when not given. ``max_download_bytes`` bounds
    every photo read, whatever its source. A download follows at most 5 redirects and, unless
    ``allow_unsafe_redirects``, refuses one from HTTPS to HTTP or to a private, loopback or
    link-local address (a public URL cannot send this command to fetch from the machine's network).
    """

    def __init__(
        self,
        http: httpx.Client | None = None,
        *,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
        s3_client: Any = None,
        endpoint_url: str | None = None,
        s3_page_size: int | None = None,
        allow_unsafe_redirects: bool = False,
    ) -> None:
        self._http = http
        self.allow_unsafe_redirects = allow_unsafe_redirects
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
            self._http = httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0))
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
            yield from local_photos(os.fspath(source), self.max_download_bytes)
        elif isinstance(source, str):
            if is_url(source):
                yield self.url_photo(source)
            elif is_s3(source):
                yield from self.s3_photos(source)
            else:
                yield from local_photos(source, self.max_download_bytes)
        else:
            raise TypeError(f"cannot diagnose a {type(source).__name__}: give a path, URL, s3:// URI or bytes")

    # -- URLs -------------------------------------------------------------------------------
    def url_photo(self, url: str) -> Photo:
        name = unquote(PurePosixPath(urlsplit(url).path).name) or "photo"
        return Photo(url, name, lambda: self.download(url))

    def download(self, url: str) -> bytes:
        """Fetch ``url``, streamed, refusing anything larger than ``max_download_bytes`` and unsafe redirects."""
        for _ in range(MAX_REDIRECTS + 1):
            target = self._download_once(url)
            if isinstance(target, bytes):
                return target
            if not self.allow_unsafe_redirects:
                check_redirect(url, target)
            url = target
        raise SourceError(f"download failed: more than {MAX_REDIRECTS} redirects from {url}")

    def _download_once(self, url: str) -> bytes | str:
        """The body of ``url``, or the URL it redirects to."""
        limit = self.max_download_bytes
        try:
            with self.http.stream("GET", url, follow_redirects=False) as response:
                if response.is_redirect and response.headers.get("location"):
                    return str(response.url.join(response.headers["location"]))
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
            limit = self.max_download_bytes
            try:
                answer = self.s3.get_object(Bucket=bucket, Key=key)
                if int(answer.get("ContentLength") or 0) > limit:
                    raise SourceError(too_large(f"s3://{bucket}/{key}", int(answer["ContentLength"]), limit))
                data = answer["Body"].read(limit + 1)
            except SourceError:
                raise
            except Exception as error:
                raise SourceError(f"cannot read s3://{bucket}/{key}: {error}") from error
            if len(data) > limit:
                raise SourceError(too_large(f"s3://{bucket}/{key}", len(data), limit))
            return data

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


def too_large(source: str, size: int, limit: int) -> str:
    return f"{source} is {size:,} bytes or more, over the {limit:,}-byte limit of one photo"


def check_redirect(origin: str, target: str) -> None:
    """Refuse a redirect from HTTPS to HTTP, or to a host that is (or resolves to) a non-public address."""
    before, after = urlsplit(origin), urlsplit(target)
    if after.scheme not in ("http", "https"):
        raise SourceError(f"download refused: {origin} redirects to a {after.scheme or 'relative'} URL")
    if before.scheme == "https" and after.scheme == "http":
        raise SourceError(f"download refused: {origin} redirects from HTTPS to HTTP ({target})")
    host = after.hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, after.port or 443, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError) as error:
        raise SourceError(f"download failed: cannot resolve {host} (redirected from {origin}): {error}") from error
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global or ip.is_multicast:
            raise SourceError(
                f"download refused: {origin} redirects to {host} ({ip}), a private, loopback or link-local address"
            )


def local_photos(path: str, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES) -> Iterator[Photo]:
    """A file is one photo, whatever its extension; a folder is its image files, recursively, sorted.

    Hidden files and folders (names starting with ``.``) are skipped inside folders.
    """
    root = Path(path)
    if root.is_file():
        yield _file_photo(path, max_bytes)
    elif root.is_dir():
        found = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if not name.startswith(".") and is_image_name(name):
                    full = os.path.join(folder, name)
                    found.append((Path(full).relative_to(root).parts, full))
        for _, full in sorted(found):
            yield _file_photo(full, max_bytes)
    else:
        yield _failing(path, f"no such file or folder: {path}")


def _file_photo(path: str, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES) -> Photo:
    def read() -> bytes:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise SourceError(too_large(path, size, max_bytes))
            data = handle.read(max_bytes + 1)  # a file that grew since: still bounded
        if len(data) > max_bytes:
            raise SourceError(too_large(path, len(data), max_bytes))
        return data

    return Photo(path, os.path.basename(path), read)


def _file_object(stream: IO[bytes]) -> Photo:
    name = getattr(stream, "name", None)
    name = name if isinstance(name, str) and name else "<stream>"
    data = stream.read()
    if isinstance(data, str):
        raise TypeError("open the photo in binary mode ('rb')")
    return Photo(name, os.path.basename(name) if name != "<stream>" else "photo", lambda: data)
