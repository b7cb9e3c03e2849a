"""End-to-end latency of a long-running tool in the local stack.

    uv run python -m bench.operation_bench [--runs 10]

Measures, over loopback HTTP against the local stack (moto running the real ASL, its Lambda tasks dispatched
in-process, a real redis-server, the offline LLM): from the chat turn's POST to the continuation's first token
on a resumed stream (``GET /chat/{id}/stream`` polled like a client), for a long-running tool whose body takes
no time. Baseline, same run: the time to first token of a plain chat turn.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
import uuid
from typing import Any

import httpx
from pydantic import BaseModel

from chatcore import builtin_tools
from chatcore.tools import ToolContext, ToolRegistry


class _NoArgs(BaseModel):
    pass


async def zero_time_job(args: _NoArgs, ctx: ToolContext) -> dict[str, Any]:
    return {"done": True}


def tools_with_zero_time_job() -> ToolRegistry:
    """The built-in tools and a background job that takes no time, injected into the stack's containers."""
    registry = builtin_tools.default_registry()
    registry.tool("A background job that finishes at once (benchmark).", kind="long_running")(zero_time_job)
    return registry


def _first_delta(response: httpx.Response) -> float | None:
    """When the first text-delta arrived; reads the stream to its end (the turn must finish before the next)."""
    first = None
    for line in response.iter_lines():
        if first is None and line.startswith("data: ") and '"text-delta"' in line:
            first = time.perf_counter()
    return first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    from local.moto_server import MotoServer
    from local.server import ServerThread
    from local.stack import LocalStack
    from tests.support.redis_server import RedisServer, free_port
    from tests.support.tokens import auth_header

    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        POWERTOOLS_METRICS_DISABLED="true",
    )
    moto = MotoServer().start()
    os.environ["AWS_ENDPOINT_URL"] = moto.url
    redis = RedisServer().start()
    port = free_port()
    stack = LocalStack(
        aws="external",
        table=f"bench-{uuid.uuid4().hex[:8]}",
        redis_url=redis.url,
        public_url=f"http://127.0.0.1:{port}",
        tools=tools_with_zero_time_job(),
    ).start()
    server = ServerThread(stack.app, port=port).start()
    assert stack.settings is not None
    assert stack.llm is not None
    # 5 ms between tokens: the continuation lasts longer than the 10 ms resume poll, so the client joins it live
    # (a client joining mid-stream gets the replay at once: the figure is late by at most one poll interval).
    stack.llm.token_delay = 0.005
    headers = auth_header("bench", secret=stack.settings.jwt_secret)
    operation_ms: list[float] = []
    plain_ms: list[float] = []
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            for run in range(args.runs + 1):
                sid = client.post("/sessions", json={"title": "bench"}).json()["id"]
                started = time.perf_counter()
                with client.stream("POST", f"/sessions/{sid}/stream", json={"message": "hi"}) as response:
                    first = _first_delta(response)
                assert first is not None
                if run:
                    plain_ms.append((first - started) * 1000)

                started = time.perf_counter()
                body = client.post(f"/sessions/{sid}/stream", json={"message": "[[tool:zero_time_job]]"}).text
                assert "data-operation" in body, body
                deadline = time.monotonic() + 30
                first = None
                while first is None and time.monotonic() < deadline:
                    with client.stream("GET", f"/chat/{sid}/stream") as response:
                        if response.status_code == 200:
                            first = _first_delta(response)
                            continue
                    time.sleep(0.01)
                assert first is not None, "no continuation"
                if run:  # the first run warms everything up
                    operation_ms.append((first - started) * 1000)
    finally:
        server.call(stack.engine.aclose()) if stack.engine else None
        server.stop()
        stack.stop()
        redis.stop()
        moto.stop()

    def p(values: list[float], q: float) -> float:
        return sorted(values)[min(len(values) - 1, int(q * len(values)))]

    op50, base50 = statistics.median(operation_ms), statistics.median(plain_ms)
    print("Long-running tool, end to end (local stack, loopback), zero-time tool body")
    print(f"  runs: {args.runs} (after 1 warm-up)")
    p90 = p(operation_ms, 0.9)
    print(f"  chat turn start -> continuation's first token on a resumed stream: p50 {op50:.0f} ms, p90 {p90:.0f} ms")
    print(f"  baseline, same run: plain turn time to first token: p50 {base50:.0f} ms")
    print(f"  ratio: {op50 / base50:.1f}x the plain first-token time, +{op50 - base50:.0f} ms")
    print("  (moto's interpreter, in-process Lambda dispatch and DynamoDB over loopback: not AWS timings)")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"operation_ms": operation_ms, "plain_ttft_ms": plain_ms}, out)


if __name__ == "__main__":
    main()
