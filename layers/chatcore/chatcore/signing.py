"""HMAC signatures of callback requests: ``x-chat-signature: sha256=<hex>`` over ``<timestamp>.<body>``, with
``x-chat-timestamp`` (unix seconds) no more than five minutes from now, so a captured request cannot be replayed
later (and a replay within the window finds the operation already completed)."""

from __future__ import annotations

import hashlib
import hmac
import time

TOLERANCE_SECONDS = 300
SIGNATURE_HEADER = "x-chat-signature"
TIMESTAMP_HEADER = "x-chat-timestamp"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signed_headers(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    timestamp = int(now if now is not None else time.time())
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, *, now: float | None = None) -> bool:
    if not secret or not timestamp or not signature or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    moment = int(timestamp)
    if abs((now if now is not None else time.time()) - moment) > TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(sign(secret, moment, body), signature)
