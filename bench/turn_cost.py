"""A turn's cost on a 10-message and a 10,000-message session (issue 11), and each function's peak RSS.

Run from the repo root: ``uv run python -m bench.turn_cost [--turns 15] [--json PATH]``.

1. Turn time: one chat turn through the real engine (``ChatEngine.stream_chat_completion``; moto over loopback HTTP,
   a real ``redis-server``, an instant in-process model so the model's time is not measured), on a session of 10
   messages and one of 10,000 (with the summary a long session has: the history after it is 9 messages, as the
   short one's). Cold: the session's cache keys deleted before the turn; warm: the previous turn cached its working
   set. Medians over ``--turns`` turns of each kind, interleaved; the 10,000/10 ratio of each. Also each kind's
   DynamoDB requests and the items they returned (botocore ``after-call`` hooks), and, for reference, the time of
   the whole-path read (``SessionStore.load``) of the 10,000-message session, which every cold turn made before.
   Both sessions are written straight into the table with the store's codecs (``tests.support.long_sessions``).
2. Memory: each function in a fresh interpreter with the environment ``template.yaml`` gives it (as
   ``bench.cold_start``): peak RSS (``VmHWM``) after init (``import app``), then after a turn on the 10,000-message
   session (cache cold) for the two functions that run turns — ChatFunction (``POST /sessions/{id}/stream`` on its
   ASGI app, against the offline model over loopback HTTP; a 10-message session's turn too, for comparison) and
   ContinuationFunction (``engine.continue_session``, what its ``continue`` step runs) — and after the sample first
   request of ``events/`` for the others, which never run a turn.

Needs ``redis-server`` on PATH. About two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import redis
import redis.asyncio as aioredis

from bench.child import CHILD_PRELUDE
from bench.cold_import import ROOT, run_fresh
from bench.cold_start import FIRST_REQUESTS, FUNCTIONS, Environments
from chatcore.config import Settings
from chatcore.container import Container
from chatcore.tools import ToolRegistry
from local.moto_server import MotoServer
from local.offline_llm import OfflineLLM
from local.template import create_table_kwargs
from tests.support.handlers import load_event
from tests.support.long_sessions import Tree, write_session
from tests.support.redis_server import RedisServer
from tests.unit.fakes import ScriptedModel

SHORT, LONG = 10, 10_000
LONG_SUMMARY = LONG - 9  # the history after the summary's message: 9 messages, as many as the short session's
USER = "bench-user"
READS = {"GetItem", "Query", "BatchGetItem", "Scan", "TransactGetItems"}


def _sessions(client: Any, table: str, prefix: str) -> tuple[str, str]:
    short, long = Tree(), Tree()
    short.line(0, SHORT)
    long.line(0, LONG)
    ids = (f"{prefix}-short-session", f"{prefix}-long-session")
    write_session(client, table, ids[0], USER, short)
    write_session(client, table, ids[1], USER, long, summary_seq=LONG_SUMMARY)
    return ids


# -- 1. turn time ---------------------------------------------------------------------------------------------


class TimedModel(ScriptedModel):
    """The instant model, noting when each answer request is sent (what the reads and the prompt's build precede)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[float] = []

    def stream(self, messages: list[dict[str, Any]], **options: Any) -> Any:
        self.sent.append(time.perf_counter())
        return super().stream(messages, **options)


async def _timing(turns: int) -> dict[str, Any]:
    moto, server = MotoServer().start(), RedisServer().start()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    os.environ["AWS_ENDPOINT_URL"] = moto.url
    os.environ.pop("AWS_PROFILE", None)
    table = f"bench-{uuid.uuid4().hex[:12]}"
    boto3.client("dynamodb").create_table(**create_table_kwargs(table))
    # A longer Redis timeout than the default 0.5 s: on a loaded machine a timeout opens the cache's circuit, and a
    # "warm" turn would then read DynamoDB.
    settings = Settings(table_name=table, redis_url=server.url, jwt_secret="x" * 32, redis_timeout_seconds=3.0)
    model = TimedModel()
    container = Container(settings, llm=model, tools=ToolRegistry())
    cache = aioredis.Redis.from_url(server.url)
    calls: list[tuple[str, int]] = []

    def after(model: Any, parsed: dict[str, Any], **_: Any) -> None:
        items = len(parsed.get("Items", [])) + (1 if "Item" in parsed else 0)
        calls.append((model.name, items))

    try:
        db = container.aws.dynamodb()
        seeding = time.perf_counter()
        short, long = _sessions(db, table, "timing")
        seeded_s = time.perf_counter() - seeding
        db.meta.events.register("after-call.dynamodb", after)
        engine = container.engine
        times: dict[str, list[float]] = {}
        requests: dict[str, Counter[tuple[int, int, int]]] = {}
        failed: list[str] = []

        async def turn(kind: str, sid: str, number: int) -> None:
            if kind.startswith("cold"):
                await cache.delete(f"chat:working-set:{sid}", f"chat:session:{sid}", f"chat:user-context:{USER}")
            calls.clear()
            model.sent.clear()
            start = time.perf_counter()
            events = [
                e async for e in engine.stream_chat_completion(sid, f"question {number}", USER, client_message_id=None)
            ]
            took = time.perf_counter() - start
            if getattr(events[-1], "finish_reason", None) != "stop":
                failed.append(kind)  # counted and left out (on a loaded machine a DynamoDB call may time out)
                return
            if number >= 0:
                times.setdefault(kind, []).append(took * 1000)
                times.setdefault(f"{kind} request", []).append((model.sent[0] - start) * 1000)
                reads = [c for c in calls if c[0] in READS]
                counted = (len(calls), len(reads), sum(items for _, items in reads))
                requests.setdefault(kind, Counter())[counted] += 1

        order = [("cold 10", short), ("warm 10", short), ("cold 10000", long), ("warm 10000", long)]
        for number in range(-2, turns):  # two rounds of warm-up
            shift = number % 2 * 2  # every other round, the long session first
            for kind, sid in order[shift:] + order[:shift]:
                await turn(kind, sid, number)
        whole: list[float] = []
        for _ in range(5):
            start = time.perf_counter()
            loaded = await container.sessions.store.load(long)
            whole.append((time.perf_counter() - start) * 1000)
            if loaded is None or len(loaded.messages) <= LONG:
                raise RuntimeError("the long session did not read back whole")
    finally:
        await cache.aclose()
        await container.aclose()
        server.stop()
        moto.stop()
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    return {
        "turns": turns,
        "seeding_s": seeded_s,
        "median_ms": medians,
        "ratio_cold": medians["cold 10000"] / medians["cold 10"],
        "ratio_warm": medians["warm 10000"] / medians["warm 10"],
        "ratio_cold_request": medians["cold 10000 request"] / medians["cold 10 request"],
        "ratio_warm_request": medians["warm 10000 request"] / medians["warm 10 request"],
        # The most frequent (requests, reads, items read) of each kind (a write retried under load adds a read back).
        "dynamodb_requests_reads_items": {kind: found.most_common(1)[0][0] for kind, found in requests.items()},
        "whole_path_read_ms": statistics.median(whole),
        "failed_turns": failed,
    }


# -- 2. memory ------------------------------------------------------------------------------------------------

# Runs in a fresh interpreter with the function's environment. argv[1]: a JSON job. Prints one JSON line last.
CHILD = (
    r"""
import asyncio, json, sys
job = json.loads(sys.argv[1])
"""
    + CHILD_PRELUDE
    + r"""

sys.path.insert(0, job["dir"])
import app

init_rss = rss_mb()
work = job["work"]
if work == "chat":
    import httpx

    async def main():
        transport = httpx.ASGITransport(app=app.asgi_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lambda", timeout=60) as client:
            headers = {"authorization": job["token"]}
            reply = await client.post(f"/sessions/{job['sid']}/stream", json={"message": "And now?"}, headers=headers)
            return reply.status_code, "finish" in reply.text

    status, finished = asyncio.run(main())
    status = status if finished else -status
elif work == "continue":
    from chatcore.container import default_container

    async def main():
        engine = default_container().engine
        handle = await engine.continue_session(job["sid"], job["user"], depth=1)
        await handle.task
        await engine.aclose()
        return 200

    status = asyncio.run(main())
else:
    status = app.handler(job["event"], Context()).get("statusCode", 200)
print(json.dumps({"init_rss_mb": init_rss, "peak_rss_mb": rss_mb(), "status": status}))
"""
)


def _memory() -> list[dict[str, Any]]:
    envs = Environments()
    llm = OfflineLLM().__enter__()
    try:
        table = envs.env["chat"]["CHAT_TABLE_NAME"]
        short, long = _sessions(boto3.client("dynamodb"), table, "memory")
        jobs: list[tuple[str, str, dict[str, Any]]] = [
            ("chat", "a turn on 10 messages", {"work": "chat", "sid": short}),
            ("chat", "a turn on 10,000 messages", {"work": "chat", "sid": long}),
            ("continuation", "a continued turn on 10,000 messages", {"work": "continue", "sid": long}),
        ]
        for name in ("sessions", "tool_worker", "callback"):
            event = load_event(FIRST_REQUESTS[name][1])
            if name == "sessions":
                event["headers"]["authorization"] = envs.token
            jobs.append((name, f"its first request ({FIRST_REQUESTS[name][0]})", {"work": "event", "event": event}))
        results = []
        for function, work, job in jobs:
            env = {**envs.env[function], "LLM_BASE_URL": llm.base_url}
            flush = redis.Redis.from_url(envs.redis.url)
            flush.flushall()  # every job's turn finds the cache cold
            flush.close()
            payload = {**job, "dir": str(ROOT / "functions" / function), "token": envs.token, "user": USER}
            result, stderr = run_fresh(CHILD, [json.dumps(payload)], env)
            if result["status"] != 200:
                raise RuntimeError(f"{function}: {work} answered {result['status']}: {stderr[-2000:]}")
            results.append({"function": FUNCTIONS[function], "after": work, **result})
        return results
    finally:
        llm.__exit__(None, None, None)
        envs.stop()


def render(timing: dict[str, Any], memory: list[dict[str, Any]]) -> str:
    medians = timing["median_ms"]
    lines = [
        f"## Turn time, 10 vs 10,000 messages (median of {timing['turns']} turns each, interleaved)",
        "",
        "| turn | to the model request: 10 / 10,000 messages | ratio | whole turn: 10 / 10,000 | ratio "
        "| DynamoDB requests (reads) / items read: 10 vs 10,000 |",
        "|---|---:|---:|---:|---:|---|",
    ]
    counts = timing["dynamodb_requests_reads_items"]
    for kind in ("cold", "warm"):
        short, long = counts[f"{kind} 10"], counts[f"{kind} 10000"]
        lines.append(
            f"| {kind} cache | {medians[f'{kind} 10 request']:.1f} / {medians[f'{kind} 10000 request']:.1f} ms "
            f"| {timing[f'ratio_{kind}_request']:.2f}x "
            f"| {medians[f'{kind} 10']:.0f} / {medians[f'{kind} 10000']:.0f} ms | {timing[f'ratio_{kind}']:.2f}x "
            f"| {short[0]} ({short[1]}) / {short[2]} vs {long[0]} ({long[1]}) / {long[2]} |"
        )
    lines += [
        "",
        f"Whole-path read of the 10,000-message session (`SessionStore.load`, what every cold turn read before): "
        f"{timing['whole_path_read_ms']:.0f} ms. Seeding both sessions: {timing['seeding_s']:.1f} s. "
        f"Turns that failed (left out): {timing['failed_turns'] or 'none'}.",
        "",
        "## Peak RSS (VmHWM) per function",
        "",
        "| function | after init | after | peak |",
        "|---|---:|---|---:|",
    ]
    for row in memory:
        lines.append(
            f"| {row['function']} | {row['init_rss_mb']:.1f} MB | {row['after']} | {row['peak_rss_mb']:.1f} MB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--turns", type=int, default=15)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    timing = asyncio.run(_timing(args.turns))
    memory = _memory()
    print(render(timing, memory))
    if args.json:
        args.json.write_text(json.dumps({"timing": timing, "memory": memory}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
