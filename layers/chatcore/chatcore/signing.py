"""HMAC signatures of callback requests.

``x-chat-signature: sha256=<hex>`` is HMAC-SHA256 over ``<timestamp>.<METHOD>.<path>.<body>`` with
``x-chat-timestamp`` (unix seconds, ASCII digits) no more than five minutes from now. Binding the method and the
path (which names the operation and the action) means a signature captured for one operation, or for a heartbeat,
authorises nothing else; the time window bounds how long a captured request is worth replaying, and the callback
app refuses a second use of the same signature within it (``signature_digest`` is what it remembers).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

TOLERANCE_SECONDS = 300
SIGNATURE_HEADER = "x-chat-signature"
TIMESTAMP_HEADER = "x-chat-timestamp"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")


def canonical_path(path: str) -> str:
    """The path as signed: repeated slashes collapsed (a base URL ending in ``/`` joined with ``/operations``)."""
    return re.sub(r"/{2,}", "/", path) or "/"


def sign(secret: str, timestamp: int, method: str, path: str, body: bytes) -> str:
    message = f"{timestamp}.{method.upper()}.{canonical_path(path)}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, method: str, path: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    timestamp = int(now if now is not None else time.time())
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, method, path, body)}


def verify(
    secret: str,
    timestamp: str | None,
    signature: str | None,
    method: str,
    path: str,
    body: bytes,
    *,
    now: float | None = None,
) -> bool:
    if not secret or not timestamp or not signature:
        return False
    # fullmatch on [0-9]: str.isdigit() also accepts "²", which int() then refuses.
    if not _TIMESTAMP.fullmatch(timestamp) or not _SIGNATURE.fullmatch(signature):
        return False
    moment = int(timestamp)
    if abs((now if now is not None else time.time()) - moment) > TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(sign(secret, moment, method, path, body), signature)


def signature_digest(signature: str) -> str:
    """A short stable name for a signature already verified (what the replay guard stores)."""
    return hashlib.sha256(signature.encode()).hexdigest()[:32]
