"""chatcore.hs256 against PyJWT: the same verdict (claims, expired, refused) on generated and mangled tokens.

The HS256 path exists so that a cold start loads neither PyJWT nor cryptography; it must accept exactly what
``jwt.decode`` accepted with the options ``chatcore.auth`` used to pass."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chatcore import hs256
from chatcore.errors import Unauthorized

SECRET = "s" * 20 + "-differential-secret"
OTHER = "o" * 40
ISSUER = "https://issuer.example"
LEEWAY = 30
REQUIRE = ("exp", "sub")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _sign(header: Any, payload: Any, secret: str = SECRET, *, raw_payload: bytes | None = None) -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(raw_payload if raw_payload is not None else json.dumps(payload).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def pyjwt_verdict(token: str, issuer: str | None) -> Any:
    try:
        return jwt.decode(
            token,
            SECRET,
            algorithms=["HS256"],
            issuer=issuer,
            leeway=LEEWAY,
            options={"require": list(REQUIRE), "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        return "expired"
    except (jwt.InvalidTokenError, jwt.InvalidKeyError, TypeError):
        return "invalid"


def our_verdict(token: str, issuer: str | None) -> Any:
    try:
        return hs256.verify(token, SECRET, issuer=issuer, leeway=LEEWAY, require=REQUIRE)
    except Unauthorized as exc:
        return {hs256.EXPIRED: "expired", hs256.INVALID: "invalid"}[exc.message]


def same_verdict(token: str, issuer: str | None = None) -> Any:
    theirs, ours = pyjwt_verdict(token, issuer), our_verdict(token, issuer)
    assert ours == theirs, token
    return ours


# Read when the module is collected: the whole suite can run these tests a quarter of an hour later, so a token
# meant to be valid expires a day after NOW (an expiry 10 minutes ahead had passed by then in CI).
NOW = int(time.time())
# Times far from every boundary (now, now +- leeway) so the two clocks, read microseconds apart, agree.
TIMES = st.sampled_from([NOW - 100_000, NOW - 45, NOW + 45, NOW + 100_000])
NUMERIC: st.SearchStrategy[Any] = (
    TIMES
    | TIMES.map(float)
    | TIMES.map(str)
    | TIMES.map(lambda t: t + 0.5)
    | st.sampled_from([None, True, False, "soon", [], {}, 1e400, "1e3", " 12 ", -(10**30)])
)
SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=6) | st.sampled_from([ISSUER, "alice"])
CLAIM = st.sampled_from(["exp", "iat", "nbf", "sub", "iss", "jti", "aud", "client_id", "x"])
VALUES = NUMERIC | SCALARS
HEADER_CHANGES = st.dictionaries(
    st.sampled_from(["alg", "typ", "kid", "crit", "b64"]),
    st.sampled_from(["HS256", "none", "HS512", "RS256", "hs256", "", None, 1, True, False, "false", "JWT", "b64"])
    | st.sampled_from([["b64"], [], ["exp"], [1], ["b64", "b64"]]),
    max_size=2,
)


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A valid payload with up to three claims changed or removed, so that each change meets the checks alone."""
    payload: dict[str, Any] = {"sub": "alice", "exp": NOW + 100_000, "iat": NOW - 100}
    for _ in range(draw(st.integers(0, 3))):
        name = draw(CLAIM)
        if draw(st.integers(0, 4)) == 0:
            payload.pop(name, None)
        else:
            payload[name] = draw(VALUES)
    return payload


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header_changes=HEADER_CHANGES, payload=payloads(), wrong_key=st.booleans(), with_issuer=st.booleans())
@example(header_changes={}, payload={"sub": "alice", "exp": NOW + 86_400}, wrong_key=False, with_issuer=False)
@example(
    header_changes={"crit": ["b64"], "b64": True},
    payload={"sub": "a", "exp": NOW + 86_400, "iss": ISSUER},
    wrong_key=False,
    with_issuer=True,
)
@example(
    header_changes={"crit": ["b64"]}, payload={"sub": "a", "exp": NOW + 86_400}, wrong_key=False, with_issuer=False
)
@example(header_changes={"kid": 1}, payload={"sub": "a", "exp": NOW + 86_400}, wrong_key=False, with_issuer=False)
@example(header_changes={}, payload={"sub": 7, "exp": NOW + 86_400}, wrong_key=False, with_issuer=False)
@example(header_changes={}, payload={"sub": "a", "jti": 7, "exp": NOW + 86_400}, wrong_key=False, with_issuer=False)
def test_generated_tokens_get_pyjwts_verdict(header_changes, payload, wrong_key, with_issuer):
    token = _sign({"alg": "HS256", "typ": "JWT", **header_changes}, payload, OTHER if wrong_key else SECRET)
    same_verdict(token, ISSUER if with_issuer else None)


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(0, 400),
    replacement=st.sampled_from([*"A_-=.+/ é\x00", "==", "", "AAAA"]),
)
def test_mangled_tokens_get_pyjwts_verdict(position, replacement):
    token = _sign({"alg": "HS256", "typ": "JWT"}, {"sub": "alice", "exp": NOW + 86_400, "iat": NOW})
    index = position % (len(token) + 1)
    same_verdict(token[:index] + replacement + token[index + 1 :])
    same_verdict(token[:index] + replacement + token[index:])


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _signed(head: str, body: str) -> str:
    signature = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_non_canonical_base64_and_padding_get_pyjwts_verdict(segment):
    """A last character whose unused bits are set decodes to the same bytes: both refuse it (a forged-looking
    signature must not verify); up to two "=" of padding are tolerated where the length allows. Header and payload
    are signed as mangled (the signature covers their text), so only the decoding decides."""
    verdicts = []
    lengths = set()
    for filler in range(4):  # header and payload segments of every length modulo 4
        head = _b64(json.dumps({"alg": "HS256", "typ": "J" * filler}).encode())
        body = _b64(json.dumps({"sub": "alice", "exp": NOW + 86_400, "ab": "x" * filler}).encode())
        parts = _signed(head, body).split(".")
        lengths.add(len(parts[segment]) % 4)
        last = parts[segment][-1]
        variants = [parts[segment][:-1] + c for c in ALPHABET[ALPHABET.index(last) + 1 : ALPHABET.index(last) + 4]]
        variants += [parts[segment] + padding for padding in ("=", "==", "===", "====")]
        for variant in variants:
            mangled = [*parts]
            mangled[segment] = variant
            token = ".".join(mangled) if segment == 2 else _signed(*mangled[:2])
            verdicts.append(same_verdict(token))
    assert "invalid" in verdicts and any(isinstance(v, dict) for v in verdicts)
    assert lengths == ({3} if segment == 2 else {0, 2, 3})  # base64url never leaves 1


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "..",
        "a.b",
        "a.b.c.d",
        _sign({"alg": "HS256"}, None, raw_payload=b"[1, 2]"),  # payload not an object
        _sign({"alg": "HS256"}, None, raw_payload=b"not json"),
        _sign({"alg": "HS256"}, None, raw_payload=b'{"sub": "a", "exp": NaN}'),
        _sign({"alg": "HS256"}, None, raw_payload=b'{"sub": "a", "exp": Infinity}'),
        _sign({"alg": "HS256"}, None, raw_payload=b'{"sub": "a", "sub": "b", "exp": 99999999999}'),
        _sign(["alg", "HS256"], {"sub": "a", "exp": NOW + 86_400}),  # header not an object
        _sign({"alg": "HS256", "b64": False}, {"sub": "a", "exp": NOW + 86_400}),
        _sign({"alg": "HS256"}, {"sub": "a", "exp": NOW + 86_400}) + "=",
        _sign({"alg": "HS256"}, {"sub": "a", "exp": NOW + 86_400}).replace(".", "=.", 1),
    ],
)
def test_edge_tokens_get_pyjwts_verdict(token):
    same_verdict(token)


def test_a_good_token_gives_its_claims_and_an_old_one_is_expired_not_invalid():
    claims = {"sub": "alice", "exp": NOW + 86_400, "iat": NOW, "iss": ISSUER, "custom": [1, {"a": None}]}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    assert same_verdict(token, ISSUER) == claims
    assert same_verdict(jwt.encode({**claims, "exp": NOW - 600}, SECRET, algorithm="HS256")) == "expired"
    # Within the leeway it still passes; a forged signature is refused before the expiry is looked at.
    assert same_verdict(jwt.encode({**claims, "exp": NOW - 10}, SECRET, algorithm="HS256")) != "invalid"
    assert same_verdict(jwt.encode({**claims, "exp": NOW - 600}, OTHER, algorithm="HS256")) == "invalid"


def test_the_clock_can_be_given():
    token = jwt.encode({"sub": "a", "exp": 1000}, SECRET, algorithm="HS256")
    assert hs256.verify(token, SECRET, now=900)["exp"] == 1000
    with pytest.raises(Unauthorized, match="expired"):
        hs256.verify(token, SECRET, now=1000)
    assert hs256.verify(token, SECRET, now=1029, leeway=30)["sub"] == "a"
