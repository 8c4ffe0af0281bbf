"""What every answer carries and who may ask: security headers, optional API keys, the page switch.

Headers: ``X-Content-Type-Options: nosniff`` and ``frame-ancestors 'none'`` on every answer (added to
a page's own Content-Security-Policy), ``Cache-Control: no-store`` on diagnoses (a photo's answer is
the sender's business, not a shared cache's).

API keys (off unless ``PLANTNET_API_KEYS_FILE`` names a file): one key a line, or ``sha256:<hex>`` of
it (hashed at rest; ``python -m util.api.security hash <key>`` prints the line). Every route but
health, metrics, the API documentation and the page then needs ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``; the presented key is hashed and compared with every stored hash in constant
time. ``PLANTNET_PAGE=off`` turns the page off for deployments where every diagnosis must be keyed.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
from pathlib import Path

from flask import Flask, Response, current_app, request

from util import messages
from util.api import errors
from util.api.errors import ApiError

EXTENSION = "api_keys"
HASH_PREFIX = "sha256:"
# Open with or without a key: probes, Prometheus and the API's own documentation.
OPEN_PATHS = frozenset({"/health", "/health/live", "/health/ready", "/metrics", "/", "/swagger.json"})
OPEN_PREFIXES = ("/swaggerui/",)
PAGE_PREFIX = "/diagnose"
FRAME_ANCESTORS = "frame-ancestors 'none'"


class KeyRing:
    """SHA-256 digests of the accepted keys; ``accepts`` compares against all of them in constant time."""

    def __init__(self, digests: list[bytes]):
        if not digests:
            raise ValueError("PLANTNET_API_KEYS_FILE holds no key")
        self.digests = digests

    @classmethod
    def from_file(cls, path: Path) -> KeyRing:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"PLANTNET_API_KEYS_FILE={path}: cannot read it ({exc})") from None
        return cls.from_lines(lines, str(path))

    @classmethod
    def from_lines(cls, lines: list[str], path: str = "") -> KeyRing:
        """Keys, or ``sha256:<hex>`` digests of keys, one a line; blank lines and # comments skipped."""
        digests = []
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith(HASH_PREFIX):
                try:
                    digest = bytes.fromhex(line[len(HASH_PREFIX) :])
                except ValueError:
                    digest = b""
                if len(digest) != hashlib.sha256().digest_size:
                    raise ValueError(f"PLANTNET_API_KEYS_FILE={path}, line {number}: not a sha256: hex digest")
                digests.append(digest)
            else:
                digests.append(digest_of(line))
        return cls(digests)

    def accepts(self, key: str) -> bool:
        presented = digest_of(key)
        found = False
        for digest in self.digests:  # no early exit: the time does not tell which key was close
            found |= hmac.compare_digest(presented, digest)
        return found


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def presented_key() -> str | None:
    """The key in ``Authorization: Bearer <key>`` or ``X-API-Key``; None when neither is sent."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = request.headers.get("X-API-Key", "").strip()
    return key or None


def is_open(path: str, page_on: bool) -> bool:
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return True
    return page_on and (path == PAGE_PREFIX or path.startswith(PAGE_PREFIX + "/"))


def _check_request():
    """Answer (JSON, whichever blueprint the path belongs to) a request for a page turned off or without a key."""
    refusal = _refusal()
    return None if refusal is None else errors.answer(refusal)


def _refusal() -> ApiError | None:
    settings = current_app.config["SETTINGS"]
    path = request.path
    if not settings.page and (path == PAGE_PREFIX or path.startswith(PAGE_PREFIX + "/")):
        return ApiError(404, messages.PAGE_OFF)
    keys: KeyRing | None = current_app.extensions.get(EXTENSION)
    if keys is None or is_open(path, settings.page):
        return None
    key = presented_key()
    if key is None:
        return ApiError(401, messages.API_KEY_REQUIRED, {"WWW-Authenticate": 'Bearer realm="plantnet"'})
    if not keys.accepts(key):
        challenge = 'Bearer realm="plantnet", error="invalid_token"'
        return ApiError(401, messages.API_KEY_WRONG, {"WWW-Authenticate": challenge})
    return None


def add_headers(response: Response) -> Response:
    """nosniff and frame-ancestors on every answer; no-store on diagnoses."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    policy = headers.get("Content-Security-Policy")
    if not policy:
        headers["Content-Security-Policy"] = FRAME_ANCESTORS
    elif "frame-ancestors" not in policy:
        headers["Content-Security-Policy"] = f"{policy.rstrip('; ')}; {FRAME_ANCESTORS}"
    if request.method == "POST" or request.path.startswith("/Diagnosis/"):
        headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    if settings.api_keys_file:
        app.extensions[EXTENSION] = KeyRing.from_file(Path(settings.api_keys_file))
    app.before_request(_check_request)
    app.after_request(add_headers)


def main(argv: list[str]) -> int:
    """``python -m util.api.security hash <key>``: the line to put in PLANTNET_API_KEYS_FILE instead of the key."""
    if len(argv) != 2 or argv[0] != "hash":
        print("usage: python -m util.api.security hash <key>", file=sys.stderr)
        return 2
    print(HASH_PREFIX + digest_of(argv[1]).hex())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
