"""Short-lived signed URLs for task images: the portal's ``grant_read_access``.

Ground Truth's ``grant_read_access`` presigns an S3 URI. The portal does the same for local files and S3
objects: the template asks for a URI, and gets ``/assets/<token>`` back, where the token names

- an *asset digest*: a keyed hash of the exact URI (the URI itself never reaches the browser; the digest is
  looked up server-side, so a reviewer learns nothing about the server's paths),
- the reviewer the URL was issued to (a URL copied into another account's browser does not work),
- an expiry time (seconds since the epoch),

and an HMAC-SHA256 over all three. Changing any part of the token (another file, another reviewer, a later
expiry) breaks the signature. Pure functions of the key and the inputs; no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

__all__ = ["AssetGrant", "InvalidToken", "ExpiredToken", "asset_digest", "sign_asset", "verify_asset",
           "IMAGE_TYPES"]

#: File types the portal will serve as task assets (by extension), and their content types.
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp"}

_TOKEN_RE = re.compile(r"^(?P<digest>[0-9a-f]{32})\.(?P<expires>\d{1,12})\.(?P<reviewer>\d{1,12})\."
                       r"(?P<sig>[A-Za-z0-9_-]{43})$")


class InvalidToken(Exception):
    """The token is malformed or its signature does not match."""


class ExpiredToken(InvalidToken):
    """The token was valid but its expiry time has passed."""


@dataclass(frozen=True)
class AssetGrant:
    digest: str
    reviewer_id: int
    expires_at: int


def asset_digest(key: bytes, uri: str) -> str:
    """32 hex characters naming one exact URI under this key (not reversible without the server's table)."""
    return hmac.new(key, b"asset-id\x00" + uri.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def _signature(key: bytes, digest: str, expires_at: int, reviewer_id: int) -> str:
    msg = f"asset\x00{digest}\x00{expires_at}\x00{reviewer_id}".encode("ascii")
    raw = hmac.new(key, msg, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def sign_asset(key: bytes, uri: str, reviewer_id: int, ttl_s: float, now: float | None = None) -> tuple[str, str]:
    """Sign ``uri`` for ``reviewer_id`` for ``ttl_s`` seconds; returns ``(digest, token)``.

    The expiry is rounded up to the next whole minute so that one page's many images share one expiry
    (and the browser cache can reuse a URL issued a few seconds earlier).
    """
    now = time.time() if now is None else now
    expires_at = int(-(-(now + ttl_s) // 60) * 60)
    digest = asset_digest(key, uri)
    return digest, f"{digest}.{expires_at}.{int(reviewer_id)}.{_signature(key, digest, expires_at, reviewer_id)}"


def verify_asset(key: bytes, token: str, now: float | None = None) -> AssetGrant:
    """Check a token's form, signature and expiry; returns the grant or raises InvalidToken / ExpiredToken."""
    m = _TOKEN_RE.match(token or "")
    if not m:
        raise InvalidToken("malformed asset token")
    digest, expires_at, reviewer_id = m["digest"], int(m["expires"]), int(m["reviewer"])
    if not hmac.compare_digest(m["sig"], _signature(key, digest, expires_at, reviewer_id)):
        raise InvalidToken("bad asset signature")
    if (time.time() if now is None else now) >= expires_at:
        raise ExpiredToken("asset URL expired")
    return AssetGrant(digest, reviewer_id, expires_at)
