"""Sessions benchmark: cold import of the sessions Lambda handler, session load latency (Redis cache, the checked
cached read, DynamoDB), and a sparse filtered listing (the status index vs a filter applied after ``Limit``).

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
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3

from bench.cold_import import import_once
from chatcore.config import Settings
from chatcore.container import Container
from chatcore.dynamo.codecs import encode_meta
from chatcore.dynamo.expressions import Expression
from chatcore.dynamo.keys import BY_USER_INDEX, Item, s_attr, user_pk
from chatcore.dynamo.table import Table
from chatcore.models import ChatMessage, ChatSession, Role, utcnow
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
    checked_median_ms: float  # get_chat_session: the cached copy and META read concurrently, compared
    checked_p90_ms: float
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

    def checked() -> Awaitable[ChatSession | None]:
        return service.get_chat_session(sid)

    for _ in range(WARMUP):
        await from_cache()
        await checked()
        await from_dynamodb()
    cache_ms: list[float] = []
    checked_ms: list[float] = []
    dynamodb_ms: list[float] = []
    for _ in range(iterations):
        cache_ms.append(await _timed_ms(from_cache))
        checked_ms.append(await _timed_ms(checked))
        dynamodb_ms.append(await _timed_ms(from_dynamodb))
        # Powertools prints an EMF blob to stdout after 100 values of one metric; nothing flushes them here.
        metrics.clear_metrics()
    c, k, d = statistics.median(cache_ms), statistics.median(checked_ms), statistics.median(dynamodb_ms)
    return LoadResult(size, iterations, c, _p90(cache_ms), k, _p90(checked_ms), d, _p90(dynamodb_ms), d / c)


@dataclass
class ListingResult:
    sessions: int
    matching: int
    limit: int
    index_queries: int
    index_items: int
    index_median_ms: float
    filter_queries: int  # the old shape: ByUser with a FilterExpression, `Limit` before the filter
    filter_items: int
    filter_ms: float


class _QueryCounter:
    def __init__(self) -> None:
        self.queries = self.items = 0

    def __call__(self, parsed: dict[str, Any], **_: Any) -> None:
        self.queries += 1
        self.items += int(parsed.get("ScannedCount", 0))


async def _filtered_the_old_way(table: Table, user_id: str, limit: int) -> list[Item]:
    """The listing before the status index: ByUser newest first, ``Limit`` per request, the filter after it."""
    ex = Expression()
    ex.key(ex.eq("GSI1PK", s_attr(user_pk(user_id))))
    ex.filter(ex.eq("status", s_attr("archived")))
    found: list[Item] = []
    async for page in table.pages(ex, IndexName=BY_USER_INDEX, ScanIndexForward=False, Limit=limit):
        found.extend(page.get("Items", []))
        if len(found) >= limit:
            break
    return found[:limit]


async def _measure_listing(container: Container, sessions: int, iterations: int) -> ListingResult:
    service, limit = container.sessions, 2
    archived = [await service.create_session("bench-lister") for _ in range(limit)]  # the oldest
    for session in archived:
        await service.update_session(session.session_id, {"status": "archived"}, user_id="bench-lister")
    start = utcnow()
    items = [
        encode_meta(ChatSession.new("bench-lister"), start + timedelta(milliseconds=i), []) for i in range(sessions)
    ]
    client = container.aws.dynamodb()
    for first in range(0, len(items), 25):
        batch: Any = [{"PutRequest": {"Item": item}} for item in items[first : first + 25]]
        client.batch_write_item(RequestItems={service.store.table_name: batch})
    counter = _QueryCounter()
    client.meta.events.register("after-call.dynamodb.Query", counter)
    for _ in range(WARMUP):
        await service.list_sessions("bench-lister", limit=limit, status="archived")
    counter.queries = counter.items = 0
    index_ms = [
        await _timed_ms(lambda: service.list_sessions("bench-lister", limit=limit, status="archived"))
        for _ in range(iterations)
    ]
    index_queries, index_items = counter.queries // iterations, counter.items // iterations
    counter.queries = counter.items = 0
    old_ms = await _timed_ms(lambda: _filtered_the_old_way(service.store.table, "bench-lister", limit))  # once: slow
    return ListingResult(
        sessions + limit,
        limit,
        limit,
        index_queries,
        index_items,
        statistics.median(index_ms),
        counter.queries,
        counter.items,
        old_ms,
    )


async def _measure_loads(
    table: str, redis_url: str, iterations: int, listed: int
) -> tuple[list[LoadResult], ListingResult]:
    container = Container(Settings(table_name=table, redis_url=redis_url, jwt_secret="x" * 32))
    service = container.sessions
    try:
        loads = [await _measure_size(service, size, iterations) for size in SIZES]
        return loads, await _measure_listing(container, listed, iterations)
    finally:
        await service.aclose()


def measure_loads(iterations: int, listed: int) -> tuple[list[LoadResult], ListingResult]:
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
        return asyncio.run(_measure_loads(table, redis.url, iterations, listed))
    finally:
        if redis is not None:
            redis.stop()
        moto.stop()


# -- output -----------------------------------------------------------------------------------------------------


def render(imports: ImportResult, loads: list[LoadResult], listing: ListingResult) -> str:
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
        f"   {'messages':>8} | {'cache p50':>9} {'cache p90':>9} | {'checked p50':>11} {'checked p90':>11} |"
        f" {'ddb p50':>9} {'ddb p90':>9} | {'ddb/cache':>9} {'ddb/checked':>11}",
        "   " + "-" * 100,
    ]
    for r in loads:
        lines.append(
            f"   {r.messages:>8} | {r.cache_median_ms:>9.2f} {r.cache_p90_ms:>9.2f} |"
            f" {r.checked_median_ms:>11.2f} {r.checked_p90_ms:>11.2f} |"
            f" {r.dynamodb_median_ms:>9.2f} {r.dynamodb_p90_ms:>9.2f} | {r.ratio:>8.1f}x"
            f" {r.dynamodb_median_ms / r.checked_median_ms:>10.1f}x"
        )
    lines += [
        "   (times in ms; cache = service.cache.get on a real redis-server; checked = service.get_chat_session, the",
        "   cached copy and a consistent GetItem of META concurrently; ddb = service.store.load)",
        "   Note: DynamoDB here is moto over loopback HTTP, so absolute DynamoDB numbers are not AWS numbers;",
        "   the cache numbers are a real Redis (loopback, no network latency).",
        "",
        f"3. Filtered listing: {listing.sessions} sessions of one user, {listing.matching} archived (the oldest),"
        f" status=archived&limit={listing.limit}",
        f"   {'':<34}{'queries':>8} {'items read':>11} {'ms':>10}",
        f"   {'status index (median)':<34}{listing.index_queries:>8} {listing.index_items:>11}"
        f" {listing.index_median_ms:>10.2f}",
        f"   {'filter after Limit (one run)':<34}{listing.filter_queries:>8} {listing.filter_items:>11}"
        f" {listing.filter_ms:>10.2f}",
        f"   {'filter / index':<34}{listing.filter_queries / max(1, listing.index_queries):>7.0f}x"
        f" {listing.filter_items / max(1, listing.index_items):>10.0f}x"
        f" {listing.filter_ms / listing.index_median_ms:>9.0f}x",
        "   (items read = each Query's ScannedCount, counted by a botocore hook; moto's time per item is not AWS's)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15, help="fresh subprocesses per import measurement")
    parser.add_argument("--iterations", type=int, default=30, help="timed loads per session size and source")
    parser.add_argument("--sessions", type=int, default=1_198, help="active sessions beside the 2 archived ones")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.iterations < 2:
        parser.error("--runs must be >= 1 and --iterations >= 2")

    imports = measure_import(args.runs)
    loads, listing = measure_loads(args.iterations, args.sessions)
    print(render(imports, loads, listing))
    if args.json:
        payload = {
            "python": platform.python_version(),
            "import": asdict(imports),
            "loads": [asdict(r) for r in loads],
            "listing": asdict(listing),
            "dynamodb_backend": "moto over loopback HTTP",
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if imports.openai_imported else 0


if __name__ == "__main__":
    sys.exit(main())
