"""Bearer-token authentication: JWTs verified in code.

* ``hs256``: a shared secret (local and simple deployments), verified by ``chatcore.hs256`` with the standard
  library only, so a cold start loads neither PyJWT nor ``cryptography``.
* ``jwks``: RS256 (or ES256) keys from the issuer's JWKS, Cognito-compatible: issuer, audience (``aud``, or
  ``client_id`` on Cognito access tokens) and expiry are checked. PyJWT (and with it ``cryptography``) is imported
  when such an ``Authenticator`` is built.

The user id is the ``sub`` claim. A rejected token is an ``Unauthorized`` with a short reason; a JWKS endpoint that
answers with no usable key set is a ``ServiceUnavailable``; an unusable setting is a ``ConfigError``. PyJWT's
exceptions (and the ``ValueError`` of a JWKS body that is not JSON) do not leave this module.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatcore import hs256
from chatcore.config import Settings
from chatcore.errors import ConfigError, ServiceUnavailable, Unauthorized

if TYPE_CHECKING:
    import jwt

MAX_TOKEN_BYTES = 8192
LEEWAY_SECONDS = 30
MIN_SECRET_CHARS = 32  # HS256 keys shorter than the hash are guessable offline from one token
REQUIRED = ("exp", "sub")


@dataclass(frozen=True)
class Principal:
    user_id: str
    claims: dict[str, Any] = field(default_factory=dict, repr=False)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization header")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized("token too large")
    return token


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self._mode = settings.auth_mode
        self._secret = settings.jwt_secret
        self._issuer = settings.jwt_issuer or None
        self._audience = settings.jwt_audience or None
        self._jwks: jwt.PyJWKClient | None = None
        if self._mode == "jwks":
            import jwt  # RS256/ES256 need PyJWT and cryptography; HS256 needs neither

            try:
                self._jwks = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=3600, timeout=5)
            except jwt.PyJWKClientError as exc:
                raise ConfigError(f"JWKS_URL must be an http(s) URL: {exc}") from exc
        elif not self._secret:
            raise ConfigError("AUTH_MODE=hs256 needs JWT_SECRET_ARN (or JWT_SECRET)")
        elif len(self._secret) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"the HS256 secret (JWT_SECRET_ARN or JWT_SECRET) needs at least {MIN_SECRET_CHARS} characters"
            )

    async def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        if self._jwks is not None:
            claims = await self._jwks_claims(self._jwks, token)
        else:
            claims = self._hs256_claims(token)
        self._check_audience(claims)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 256:
            raise Unauthorized("invalid token subject")
        return Principal(user_id=sub, claims=claims)

    def _hs256_claims(self, token: str) -> dict[str, Any]:
        return hs256.verify(token, self._secret, issuer=self._issuer, leeway=LEEWAY_SECONDS, require=REQUIRED)

    async def _jwks_claims(self, jwks: jwt.PyJWKClient, token: str) -> dict[str, Any]:
        import jwt

        try:
            key: Any = await self._signing_key(jwks, token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256", "ES256"],
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": list(REQUIRED), "verify_aud": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized(hs256.EXPIRED) from exc
        except jwt.PyJWKClientError as exc:
            raise Unauthorized("token signed by an unknown key") from exc
        except (jwt.InvalidTokenError, jwt.InvalidKeyError, TypeError) as exc:
            # InvalidKeyError, TypeError: the token names an algorithm that does not fit the key (ES256 on RSA)
            raise Unauthorized(hs256.INVALID) from exc
        return claims

    @staticmethod
    async def _signing_key(jwks: jwt.PyJWKClient, token: str) -> Any:
        import jwt

        try:
            return (await asyncio.to_thread(jwks.get_signing_key_from_jwt, token)).key
        except (jwt.PyJWKSetError, ValueError) as exc:  # ValueError: the JWKS body is not JSON
            raise ServiceUnavailable("the JWKS endpoint returned no usable key set") from exc

    def _check_audience(self, claims: dict[str, Any]) -> None:
        if self._audience is None:
            return
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        # Cognito access tokens carry the app client in client_id instead of aud.
        if self._audience in audiences or claims.get("client_id") == self._audience:
            return
        raise Unauthorized("token is for another audience")
