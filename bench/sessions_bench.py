"""Sessions benchmark: cold import of the sessions Lambda handler, and session load latency (Redis cache vs DynamoDB).

Run from the repo root: ``uv run python -m bench.sessions_bench [--runs N] [--iterations K] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import boto3

from bench.cold_import import import_once
from chatcore.config import Settings
from chatcore.container import Container
from chatcore.models import ChatMessage, ChatSession, Role
from chatcore.observability import metrics
from chatcore.sessions import SessionService
from local.moto_server import MotoServer
from local.template import create_table_kwargs
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
HANDLER = ROOT / "functions" / "sessions" / "app.py"
SIZES = (10, 100, 1_000)
CONTENT_CHARS = 200
WARMUP = 3


@dataclass
class ImportResult:
    runs: int
    handler_median_ms: float
    baseline_median_ms: float
    ratio: float
    diff_ms: float
    openai_imported: bool


@dataclass
class LoadResult:
    messages: int
    iterations: int
    cache_median_ms: float
    cache_p90_ms: float
    dynamodb_median_ms: float
    dynamodb_p90_ms: float
    ratio: float


# -- 1. cold import ---------------------------------------------------------------------------------------------


def _import_once(mode: str, env: dict[str, str]) -> tuple[float, bool]:
    return import_once(mode, str(HANDLER), "sessions_app", env)


def measure_import(runs: int) -> ImportResult:
    env = dict(os.environ)
    # One discarded run of each first (bytecode caches, OS page cache); then alternate so drift hits both alike.
    _import_once("handler", env)
    _import_once("baseline", env)
    handler: list[float] = []
    baseline: list[float] = []
    openai_imported = False
    for _ in range(runs):
        seconds, openai = _import_once("handler", env)
        handler.append(seconds)
        openai_imported |= openai
        baseline.append(_import_once("baseline", env)[0])
    h, b = statistics.median(handler) * 1000, statistics.median(baseline) * 1000
    return ImportResult(runs, h, b, h / b, h - b, openai_imported)


# -- 2. session load latency ------------------------------------------------------------------------------------


def _content(index: int) -> str:
    text = f"message {index}: " + "the quick brown fox jumps over the lazy dog " * 5
    return text[:CONTENT_CHARS]


def _p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10, method="inclusive")[8]


async def _timed_ms(call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    result = await call()
    elapsed = (time.perf_counter() - start) * 1000
    if result is None:
        raise RuntimeError("session load returned None")
    return elapsed


async def _measure_size(service: SessionService, size: int, iterations: int) -> LoadResult:
    session = ChatSession.new("bench-user")
    roles: tuple[Role, Role] = ("user", "assistant")
    session.messages = [ChatMessage(role=roles[i % 2], content=_content(i)) for i in range(size)]
    saved = await service.upsert_chat_session(session)
    sid = saved.session_id
    await service.get_chat_session(sid)  # fills the cache if the upsert did not
    for name, loaded in (("cache", await service.cache.get(sid)), ("dynamodb", await service.store.load(sid))):
        if loaded is None or len(loaded.messages) != size:
            raise RuntimeError(f"{name} does not hold the {size}-message session")

    def from_cache() -> Awaitable[ChatSession | None]:
        return service.cache.get(sid)

    def from_dynamodb() -> Awaitable[ChatSession | None]:
        return service.store.load(sid)

    for _ in range(WARMUP):
        await from_cache()
        await from_dynamodb()
    cache_ms: list[float] = []
    dynamodb_ms: list[float] = []
    for _ in range(iterations):
        cache_ms.append(await _timed_ms(from_cache))
        dynamodb_ms.append(await _timed_ms(from_dynamodb))
        # Powertools prints an EMF blob to stdout after 100 values of one metric; nothing flushes them here.
        metrics.clear_metrics()
    c, d = statistics.median(cache_ms), statistics.median(dynamodb_ms)
    return LoadResult(size, iterations, c, _p90(cache_ms), d, _p90(dynamodb_ms), d / c)


async def _measure_loads(table: str, redis_url: str, iterations: int) -> list[LoadResult]:
    service = Container(Settings(table_name=table, redis_url=redis_url, jwt_secret="x" * 32)).sessions
    try:
        return [await _measure_size(service, size, iterations) for size in SIZES]
    finally:
        await service.aclose()


def measure_loads(iterations: int) -> list[LoadResult]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
    moto = MotoServer().start()
    redis = None
    try:
        redis = RedisServer().start()
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": moto.url,
            }
        )
        os.environ.pop("AWS_PROFILE", None)

        table = f"bench-{uuid.uuid4().hex[:12]}"
        boto3.client("dynamodb").create_table(**create_table_kwargs(table))
        return asyncio.run(_measure_loads(table, redis.url, iterations))
    finally:
        if redis is not None:
            redis.stop()
        moto.stop()


# -- output -----------------------------------------------------------------------------------------------------


def render(imports: ImportResult, loads: list[LoadResult]) -> str:
    lines = [
        f"Sessions benchmark (Python {platform.python_version()}, {platform.machine()})",
        "",
        f"1. Cold import, median of {imports.runs} fresh subprocesses (time inside the subprocess)",
        f"   {'functions/sessions/app.py':<28}{imports.handler_median_ms:>9.1f} ms",
        f"   {'import boto3 (baseline)':<28}{imports.baseline_median_ms:>9.1f} ms",
        f"   {'handler / baseline':<28}{imports.ratio:>9.2f} x",
        f"   {'handler - baseline':<28}{imports.diff_ms:>+9.1f} ms",
        f"   {'openai in sys.modules':<28}{'YES (must not be)' if imports.openai_imported else 'no':>9}",
        "",
        f"2. Session load latency, {loads[0].iterations if loads else 0} timed loads each after {WARMUP} warm-up"
        f" (messages of {CONTENT_CHARS} chars)",
        f"   {'messages':>8} | {'cache p50':>9} {'cache p90':>9} | {'ddb p50':>9} {'ddb p90':>9} | {'ddb/cache':>9}",
        "   " + "-" * 72,
    ]
    for r in loads:
        lines.append(
            f"   {r.messages:>8} | {r.cache_median_ms:>9.2f} {r.cache_p90_ms:>9.2f} |"
            f" {r.dynamodb_median_ms:>9.2f} {r.dynamodb_p90_ms:>9.2f} | {r.ratio:>8.1f}x"
        )
    lines += [
        "   (times in ms; cache = service.cache.get on a real redis-server; ddb = service.store.load)",
        "   Note: DynamoDB here is moto over loopback HTTP, so absolute DynamoDB numbers are not AWS numbers;",
        "   the cache numbers are a real Redis (loopback, no network latency).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15, help="fresh subprocesses per import measurement")
    parser.add_argument("--iterations", type=int, default=30, help="timed loads per session size and source")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.iterations < 2:
        parser.error("--runs must be >= 1 and --iterations >= 2")

    imports = measure_import(args.runs)
    loads = measure_loads(args.iterations)
    print(render(imports, loads))
    if args.json:
        payload = {
            "python": platform.python_version(),
            "import": asdict(imports),
            "loads": [asdict(r) for r in loads],
            "dynamodb_backend": "moto over loopback HTTP",
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if imports.openai_imported else 0


if __name__ == "__main__":
    sys.exit(main())
