"""Callback signatures bind the method, the path and the body; timestamps are strict ASCII digits."""

from __future__ import annotations

import pytest

from chatcore.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers, verify

SECRET = "s" * 32
PATH = "/operations/op_" + "a" * 40 + "/complete"
NOW = 1_800_000_000.0


def _verify(headers: dict[str, str], method: str = "POST", path: str = PATH, body: bytes = b"{}", **kw) -> bool:
    return verify(
        kw.get("secret", SECRET),
        headers.get(TIMESTAMP_HEADER),
        headers.get(SIGNATURE_HEADER),
        method,
        path,
        body,
        now=kw.get("now", NOW),
    )


def test_a_signature_verifies_only_what_it_signed():
    headers = signed_headers(SECRET, "POST", PATH, b"{}", now=NOW)
    assert _verify(headers)
    assert _verify(headers, path="//" + PATH.lstrip("/"))  # a base URL ending in "/" signs the same request
    assert not _verify(headers, body=b'{"x":1}')
    assert not _verify(headers, path=PATH.replace("a" * 40, "b" * 40))  # another operation
    assert not _verify(headers, path=PATH.replace("complete", "heartbeat"))  # another action
    assert not _verify(headers, method="PUT")
    assert not _verify(headers, secret="t" * 32)


def test_the_time_window():
    headers = signed_headers(SECRET, "POST", PATH, b"{}", now=NOW)
    assert _verify(headers, now=NOW + 299)
    assert not _verify(headers, now=NOW + 301)
    assert not _verify(headers, now=NOW - 301)


@pytest.mark.parametrize("timestamp", ["²", "1800000000²", "١٨٠٠٠٠٠٠٠٠", "-1", "+1800000000", " 1800000000", "1e9", ""])
def test_timestamps_are_ascii_digits_only(timestamp: str):
    headers = signed_headers(SECRET, "POST", PATH, b"{}", now=NOW)
    assert not _verify({**headers, TIMESTAMP_HEADER: timestamp})


@pytest.mark.parametrize(
    "signature", ["sha256=" + "0" * 63, "sha256=" + "Z" * 64, "md5=" + "0" * 64, "sha256=²" + "0" * 63]
)
def test_malformed_signatures_are_refused(signature: str):
    headers = signed_headers(SECRET, "POST", PATH, b"{}", now=NOW)
    assert not _verify({**headers, SIGNATURE_HEADER: signature})
