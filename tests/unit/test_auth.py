"""JWT verification: HS256 with a shared secret, and RS256 through a real JWKS endpoint on loopback."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chatcore.auth import Authenticator, bearer_token
from chatcore.config import Settings
from chatcore.errors import ConfigError, ServiceUnavailable, Unauthorized
from tests.support.tokens import SECRET, make_token

pytestmark = pytest.mark.anyio

HS = Settings(auth_mode="hs256", jwt_secret=SECRET)


async def test_hs256_valid_token_gives_sub():
    principal = await Authenticator(HS).authenticate(f"Bearer {make_token('alice')}")
    assert principal.user_id == "alice"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer " + "a" * 9000,
        f"Bearer {make_token('alice', ttl=-3600)}",
        f"Bearer {make_token('alice', secret='another-secret-of-sufficient-length!!')}",
        "Bearer " + jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"),  # no exp
        "Bearer " + jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),  # no sub
        "Bearer " + jwt.encode({"sub": 42, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),
        "Bearer " + jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none"),
    ],
)
async def test_hs256_rejections(header):
    with pytest.raises(Unauthorized):
        await Authenticator(HS).authenticate(header)


async def test_audience_and_issuer_checks():
    settings = Settings(auth_mode="hs256", jwt_secret=SECRET, jwt_issuer="https://issuer", jwt_audience="app")
    auth = Authenticator(settings)
    ok = make_token("alice", iss="https://issuer", aud="app")
    cognito_access = make_token("alice", iss="https://issuer", client_id="app")
    assert (await auth.authenticate(f"Bearer {ok}")).user_id == "alice"
    assert (await auth.authenticate(f"Bearer {cognito_access}")).user_id == "alice"
    for bad in (
        make_token("alice", iss="https://issuer", aud="other"),
        make_token("alice", iss="https://evil", aud="app"),
    ):
        with pytest.raises(Unauthorized):
            await auth.authenticate(f"Bearer {bad}")


def test_hs256_without_secret_refuses_to_start():
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        Authenticator(Settings(auth_mode="hs256", jwt_secret=""))


def test_bearer_token_parsing():
    assert bearer_token("bearer abc") == "abc"
    with pytest.raises(Unauthorized):
        bearer_token("Token abc")


class _Keys:
    def __init__(self) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        self.jwks = {"keys": [{**public, "kid": "key-1", "use": "sig", "alg": "RS256"}]}


@contextlib.contextmanager
def _endpoint(served: dict[str, bytes]) -> Iterator[str]:
    """An HTTP server on loopback answering every GET with ``served["body"]`` (read per request)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(served["body"])

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[tuple[str, _Keys]]:
    keys = _Keys()
    with _endpoint({"body": json.dumps(keys.jwks).encode()}) as url:
        yield url, keys


def _rs(keys: _Keys, key=None, kid="key-1", **claims) -> str:
    now = int(time.time())
    payload = {"sub": "carol", "iss": "https://idp.example", "aud": "client-1", "iat": now, "exp": now + 600} | claims
    return jwt.encode(payload, key or keys.private, algorithm="RS256", headers={"kid": kid})


async def test_rs256_through_jwks(jwks_server):
    url, keys = jwks_server
    settings = Settings.from_env(
        {
            "AUTH_MODE": "jwks",
            "JWT_ISSUER": "https://idp.example",
            "JWT_AUDIENCE": "client-1",
            "JWKS_URL": url + "/.well-known/jwks.json",
        }
    )
    auth = Authenticator(settings)
    assert (await auth.authenticate(f"Bearer {_rs(keys)}")).user_id == "carol"
    rejected = [
        _rs(keys, key=keys.other),  # signed by a key that is not in the JWKS
        _rs(keys, kid="unknown"),
        _rs(keys, iss="https://other"),
        _rs(keys, aud="client-2"),
        _rs(keys, exp=int(time.time()) - 600),
        make_token("carol"),  # HS256 is not accepted in jwks mode
    ]
    for token in rejected:
        with pytest.raises(Unauthorized):
            await auth.authenticate(f"Bearer {token}")


@pytest.fixture
def broken_jwks() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A JWKS endpoint whose body the test sets."""
    served = {"body": b""}
    with _endpoint(served) as url:
        yield url + "/jwks.json", served


@pytest.mark.parametrize("body", [b"<html>gateway error</html>", b'{"keys": []}', b'{"keys": [{"kty": "nope"}]}'])
async def test_a_jwks_endpoint_without_usable_keys_is_503_not_a_crash(broken_jwks, body):
    url, served = broken_jwks
    served["body"] = body
    auth = Authenticator(Settings(auth_mode="jwks", jwks_url=url))
    with pytest.raises(ServiceUnavailable):
        await auth.authenticate(f"Bearer {_rs(_Keys())}")


async def test_a_key_of_another_type_than_the_token_is_401(jwks_server):
    """The token claims ES256 for the JWKS's RSA key: PyJWT raises a bare TypeError."""
    url, _ = jwks_server
    auth = Authenticator(Settings(auth_mode="jwks", jwks_url=url + "/.well-known/jwks.json"))
    now = int(time.time())
    es_key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode({"sub": "eve", "exp": now + 60}, es_key, algorithm="ES256", headers={"kid": "key-1"})
    with pytest.raises(Unauthorized):
        await auth.authenticate(f"Bearer {token}")


def test_a_jwks_url_that_is_not_http_refuses_to_start():
    with pytest.raises(ConfigError, match="JWKS_URL"):
        Authenticator(Settings(auth_mode="jwks", jwks_url="file:///etc/jwks.json"))
