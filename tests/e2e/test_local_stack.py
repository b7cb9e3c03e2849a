"""The README's first command, `python -m local`, as a user runs it: a subprocess serving HTTP on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.redis_server import free_port


@pytest.fixture(scope="module")
def local_stack() -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("REDIS_URL", "JWT_SECRET")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "local", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("local stack did not come up:\n" + (proc.stdout.read() if proc.stdout else ""))
    yield base
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert "stopped." in output
    assert "embedded" in output and "/sessions" in output


def test_dev_token_and_session_crud_over_http(local_stack: str):
    with httpx.Client(base_url=local_stack, timeout=10) as client:
        token = client.post("/dev/token", json={"user_id": "dana"}).json()["token"]
        headers = {"authorization": f"Bearer {token}"}
        created = client.post("/sessions", json={"title": "local"}, headers=headers)
        assert created.status_code == 201
        sid = created.json()["id"]
        assert client.get(f"/sessions/{sid}", headers=headers).json()["title"] == "local"
        other = client.post("/dev/token", json={"user_id": "eve"}).json()["token"]
        assert client.get(f"/sessions/{sid}", headers={"authorization": f"Bearer {other}"}).status_code == 404
        assert client.delete(f"/sessions/{sid}", headers=headers).status_code == 204


def test_dev_token_rejects_bad_input(local_stack: str):
    with httpx.Client(base_url=local_stack, timeout=10) as client:
        for body in ({}, {"user_id": ""}, {"user_id": 5}, {"user_id": "x" * 65}):
            response = client.post("/dev/token", json=body)
            assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error"
        assert client.get("/dev/token").status_code == 405
