"""HS256 JSON Web Tokens verified with the standard library (``hmac``, ``base64``, ``json``).

PyJWT imports ``cryptography`` whenever it is installed (for the RSA and EC algorithms), about 100 ms of every cold
start; a function that only checks HMAC-signed tokens needs none of it.

``verify`` accepts exactly the tokens that PyJWT 2.x's ``jwt.decode(token, secret, algorithms=["HS256"],
issuer=..., leeway=..., options={"require": [...], "verify_aud": False})`` accepts, with the same claims, for any
secret PyJWT takes as an HMAC key (``tests/unit/test_hs256.py`` holds the two against each other on generated and
mangled tokens): compact serialization only; canonical base64url segments (trailing ``=`` tolerated); a JSON object
header whose ``alg`` is ``HS256``, ``kid`` a string, ``crit`` only ``b64`` (a detached payload, ``b64: false``, is
refused); the signature compared in constant time before any claim is read; then the required claims, ``iat`` /
``nbf`` / ``exp`` as integers against the clock with the leeway, ``iss``, and ``sub`` and ``jti`` as strings. The
audience is checked by the caller (``chatcore.auth``), as it was with PyJWT.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from typing import Any

from chatcore.errors import Unauthorized

ALGORITHM = "HS256"
EXPIRED = "token expired"  # an authentic token past its exp (leeway included)
INVALID = "invalid token"  # anything else; the caller is not told why
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_SUPPORTED_CRIT = frozenset({"b64"})


def _segment(text: str) -> bytes:
    stripped = text.rstrip("=")
    padding = len(text) - len(stripped)
    if padding > 2 or (padding and len(text) % 4) or len(stripped) % 4 == 1:
        raise Unauthorized(INVALID)  # bad base64url padding
    if not _ALPHABET.issuperset(stripped):
        raise Unauthorized(INVALID)  # not base64url
    try:
        decoded = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise Unauthorized(INVALID) from exc  # not base64url
    if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() != stripped:
        raise Unauthorized(INVALID)  # non-canonical base64url (unused bits set)
    return decoded


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise Unauthorized(INVALID) from exc  # not JSON
    if not isinstance(value, dict):
        raise Unauthorized(INVALID)  # not a JSON object
    return value


def _check_header(header: dict[str, Any]) -> None:
    if "kid" in header and not isinstance(header["kid"], str):
        raise Unauthorized(INVALID)  # kid is not a string
    if "crit" in header:
        crit = header["crit"]
        if not isinstance(crit, list) or not crit:
            raise Unauthorized(INVALID)  # crit is not a non-empty list
        for extension in crit:
            if not isinstance(extension, str) or extension not in _SUPPORTED_CRIT or extension not in header:
                raise Unauthorized(INVALID)  # unsupported critical extension
    if header.get("b64", True) is False:
        raise Unauthorized(INVALID)  # detached payload


def _integer(claims: dict[str, Any], name: str) -> int:
    try:
        return int(claims[name])
    except (ValueError, TypeError, OverflowError) as exc:
        raise Unauthorized(INVALID) from exc  # iat, nbf or exp is not an integer


def verify(
    token: str,
    secret: str,
    *,
    issuer: str | None = None,
    leeway: float = 0,
    require: Iterable[str] = (),
    now: float | None = None,
) -> dict[str, Any]:
    """The claims of ``token`` if it is an HS256 JWT signed with ``secret`` and passes the checks; else
    ``Unauthorized``: "token expired" for an authentic token past its ``exp``, "invalid token" for anything else."""
    signing_input, dot, signature_text = token.rpartition(".")
    header_text, dot2, payload_text = signing_input.partition(".")
    if not dot or not dot2:
        raise Unauthorized(INVALID)  # not three segments
    header = _json_object(_segment(header_text))
    _check_header(header)
    payload = _segment(payload_text)
    signature = _segment(signature_text)
    if header.get("alg") != ALGORITHM:
        raise Unauthorized(INVALID)  # algorithm not allowed
    expected = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise Unauthorized(INVALID)  # bad signature
    claims = _json_object(payload)
    for name in require:
        if claims.get(name) is None:
            raise Unauthorized(INVALID)  # a required claim is missing
    clock = time.time() if now is None else now
    if "iat" in claims and _integer(claims, "iat") > clock + leeway:
        raise Unauthorized(INVALID)  # issued in the future (iat)
    if "nbf" in claims and _integer(claims, "nbf") > clock + leeway:
        raise Unauthorized(INVALID)  # not yet valid (nbf)
    if "exp" in claims and _integer(claims, "exp") <= clock - leeway:
        raise Unauthorized(EXPIRED)
    if issuer is not None and claims.get("iss") != issuer:
        raise Unauthorized(INVALID)  # another issuer
    for name in ("sub", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise Unauthorized(INVALID)  # the claim is not a string
    return claims
