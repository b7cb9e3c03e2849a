"""The cache code against what ElastiCache Serverless (Valkey) is: a cluster-mode, TLS-only server.

Three masters on loopback (``tests/support/redis_cluster.py``), TLS verified against a test CA. The product's own
classes run against it with the settings a deployment ships (``REDIS_CLUSTER=true``, a ``rediss://`` URL), with
enough sessions and turns that their keys land on every node; then real chat tests (resume, stop, the operation
guard) run unchanged over a chat stack whose cache is the cluster. TLS is proven by what fails: a plain connection,
a CA that did not sign the servers' certificate, and the system trust store (the default) are all refused, and the
requests still work from DynamoDB (fail open).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

import tests.integration.test_chat_resume as resume_tests
import tests.integration.test_operations as operation_tests
from chatcore.aws import AwsClients
from chatcore.cache import RESP_VERSION
from chatcore.config import Settings
from chatcore.container import Container
from chatcore.models import ChatMessage, ChatSession
from chatcore.operations import Operations, guard_key
from chatcore.replay import ReplayLog, active_key, cancel_key, cmid_key, log_key
from chatcore.sessions import SessionService
from tests.conftest import ChatStack, start_chat_stack, stop_chat_stack
from tests.support.redis_cluster import RedisCluster
from tests.support.tokens import SECRET

SPREAD = 12  # turns / operations per test; their fixed ids put keys on all three nodes (asserted, not assumed)


def cluster_settings(table_name: str, cluster: RedisCluster, **overrides: Any) -> Settings:
    """What a deployment with the ElastiCache Serverless cache sets, plus the test CA."""
    settings = Settings(
        table_name=table_name,
        redis_url=cluster.url,
        redis_cluster=True,
        redis_tls_ca_file=str(cluster.ca_file),
        jwt_secret=SECRET,
    )
    return replace(settings, **overrides)


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> RedisCluster:
    redis_cluster.flushall()
    return redis_cluster


@pytest.fixture
async def service(table_name: str, cluster: RedisCluster) -> AsyncIterator[SessionService]:
    svc = Container(cluster_settings(table_name, cluster)).sessions
    yield svc
    await svc.aclose()


def _spread_over_every_node(cluster: RedisCluster, keys: list[str]) -> None:
    held = cluster.keys_per_node()
    assert all(held.values()), f"some node holds none of the keys: {held}"
    assert sorted(key for node_keys in held.values() for key in node_keys) == sorted(keys)


# -- the client the product ships -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_client_is_cluster_aware_over_tls_with_resp2(service: SessionService, cluster: RedisCluster):
    connector = service.cache.connector
    client = connector.client()
    assert isinstance(client, AsyncRedisCluster)
    info: dict[str, Any] = await connector.run("test.client-info", lambda c: c.execute_command("CLIENT INFO"), {})
    assert info["resp"] == "2" and RESP_VERSION == 2
    assert sorted(node.port for node in client.get_nodes()) == sorted(cluster.ports)
    assert connector.available()


# -- session cache ----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_session_cache_on_the_cluster(service: SessionService, cluster: RedisCluster):
    sessions: list[ChatSession] = []
    while len({cluster.node_of(f"chat:session:{s.session_id}") for s in sessions}) < len(cluster.ports):
        sessions.append(await service.upsert_chat_session(ChatSession.new("alice", title=f"s{len(sessions)}")))
    for saved in sessions:
        cached = await service.cache.get(saved.session_id)
        assert cached is not None and cached.model_dump() == saved.model_dump()
    # The key the design documents name, literally: chat:session:<session id>; beside it, what a turn reads.
    keys = [f"chat:{kind}:{s.session_id}" for s in sessions for kind in ("session", "working-set")]
    _spread_over_every_node(cluster, keys)

    first = sessions[0]
    first.messages.append(ChatMessage(role="user", content="newer"))
    newer = await service.upsert_chat_session(first)
    # The compare-and-set (a Lua script on the key's node) refuses an older version.
    older = sessions[1].model_copy(update={"session_id": newer.session_id, "version": newer.version - 1})
    assert await service.cache.put(older) is False
    loaded = await service.get_chat_session(newer.session_id, "alice")
    assert loaded is not None and [m.content for m in loaded.messages] == ["newer"]
    await service.invalidate_session_cache(newer.session_id)
    assert await service.cache.get(newer.session_id) is None
    reloaded = await service.get_chat_session(newer.session_id, "alice")
    assert reloaded is not None and reloaded.version == newer.version
    assert await service.get_chat_session(newer.session_id, "mallory") is None
    assert service.cache.connector.available()


@pytest.mark.anyio
async def test_session_and_user_context_are_read_together_across_nodes(table_name: str, cluster: RedisCluster):
    container = Container(cluster_settings(table_name, cluster))
    contexts = container.user_contexts
    try:
        sid = (await container.sessions.create_session("alice")).session_id
        node = cluster.node_of(f"chat:working-set:{sid}")  # what a turn reads
        user = next(u for u in (f"user-{n}" for n in range(64)) if cluster.node_of(f"chat:user-context:{u}") != node)
        await contexts.put(user, "Keyed on another node.")
        # Both cached, on two nodes: the one pipeline is split per node and both answers come back.
        cache = container.sessions.cache
        cached_session, cached_context = await cache.get_working_set_with_user_context(sid, user)
        assert cached_session is not None and cached_session.session_id == sid
        assert cached_context is not None and cached_context.context == "Keyed on another node."
        assert await contexts.session_with_context(sid, user) == (cached_session, "Keyed on another node.")
        assert container.connector.available()  # no Redis error was swallowed on the way
    finally:
        await container.aclose()


# -- replay log, turn pointers, cancel flags ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_replay_log_on_the_cluster(service: SessionService, cluster: RedisCluster):
    replay = ReplayLog(service.cache.connector, ttl_seconds=120)
    turns = [(f"s-{n}", f"t-{n}", f"m-{n}") for n in range(SPREAD)]  # the cluster is flushed for each test
    for session_id, turn_id, cmid in turns:
        assert await replay.begin(session_id, turn_id, cmid) is True
        await replay.append(turn_id, ['{"type":"start"}', '{"type":"text-delta","delta":"a"}'])
        assert await replay.request_cancel(turn_id) is True
    keys = [k for s, t, m in turns for k in (active_key(s), cmid_key(s, m), log_key(t), cancel_key(t))]
    _spread_over_every_node(cluster, keys)

    for session_id, turn_id, cmid in turns:
        assert await replay.active_turn(session_id) == turn_id
        assert await replay.turn_of_client_message(session_id, cmid) == turn_id
        assert await replay.cancel_requested(turn_id) is True
        assert await replay.exists(turn_id) is True
        entries = await replay.read(turn_id, "0-0", block_ms=100)
        assert entries is not None and [e.chunk for e in entries] == [
            '{"type":"start"}',
            '{"type":"text-delta","delta":"a"}',
        ]

    # Follow: a blocking XREAD waits on the log's node — longer than the 0.5 s socket timeout of the ordinary
    # client — until the turn appends.
    session_id, turn_id, _ = turns[0]
    last = (await replay.read(turn_id, "0-0", block_ms=100) or [])[-1].entry_id
    follower = asyncio.create_task(replay.read(turn_id, last, block_ms=5000))
    await asyncio.sleep(0.8)
    assert not follower.done()
    await replay.append(turn_id, ['{"type":"text-delta","delta":"b"}'])
    followed = await asyncio.wait_for(follower, 5)
    assert followed is not None and [e.chunk for e in followed] == ['{"type":"text-delta","delta":"b"}']

    # The end: end entry, pointer cleared (only if it is still this turn's), cancel flag dropped — on every node.
    other_turn = f"t-{uuid.uuid4().hex}"
    await replay.begin(turns[1][0], other_turn, None)  # session 1 moved on to another turn
    for session_id, turn_id, _ in turns:
        await replay.end(session_id, turn_id)
        assert await replay.cancel_requested(turn_id) is False
        entries = await replay.read(turn_id, "0-0", block_ms=100)
        assert entries is not None and entries[-1].chunk is None
    assert [await replay.active_turn(s) for s, _, _ in turns] == [None, other_turn] + [None] * (SPREAD - 2)
    assert service.cache.connector.available()


# -- operation guard ---------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_operation_guard_on_the_cluster(table_name: str, service: SessionService, cluster: RedisCluster):
    aws = AwsClients()
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:x"
    operations = Operations.build(table_name, arn, service.cache.connector, db=aws.dynamodb, sfn=aws.stepfunctions)
    ids = [f"op-{n}" for n in range(SPREAD)]  # chat:op:op-0 … op-11: fixed names, known to cover the three nodes
    assert [await operations._take_guard(op) for op in ids] == [True] * len(ids)
    assert [await operations._take_guard(op) for op in ids] == [False] * len(ids)  # SET NX: held
    _spread_over_every_node(cluster, [guard_key(op) for op in ids])
    for op in ids:
        await operations.release_guard(op)
    assert [await operations._take_guard(op) for op in ids] == [True] * len(ids)
    assert service.cache.connector.available()


# -- whole chat turns over the cluster: the resume, stop and operation tests, unchanged ----------------------------


@pytest.fixture
def cluster_chat_stack(table_name: str, cluster: RedisCluster) -> Iterator[ChatStack]:
    chat = start_chat_stack(table_name, cluster.url, redis_cluster=True, redis_tls_ca_file=str(cluster.ca_file))
    yield chat
    stop_chat_stack(chat)


CHAT_TESTS: list[Callable[[ChatStack], None]] = [
    resume_tests.test_resume_after_cut_replays_the_whole_turn_then_follows_it,
    resume_tests.test_stop_persists_the_partial_answer,
    operation_tests.test_duplicate_start_is_a_no_op,
    operation_tests.test_failing_tool_still_gets_a_continuation,
]


@pytest.mark.parametrize("chat_test", CHAT_TESTS, ids=lambda test: test.__name__.removeprefix("test_"))
def test_chat_over_the_cluster(cluster_chat_stack: ChatStack, chat_test: Callable[[ChatStack], None]):
    chat_test(cluster_chat_stack)
    connector = cluster_chat_stack.service.cache.connector
    assert connector.cluster and connector.available()  # no Redis error was swallowed on the way


# -- TLS is on and verified ---------------------------------------------------------------------------------------


def test_a_plain_connection_is_refused(cluster: RedisCluster):
    plain = redis.Redis(host="127.0.0.1", port=cluster.port, socket_timeout=2, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain.close()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "ca"),
    [
        pytest.param("redis://127.0.0.1:{port}", None, id="plain-connection"),
        pytest.param("rediss://127.0.0.1:{port}", "wrong", id="ca-that-did-not-sign-it"),
        pytest.param("rediss://127.0.0.1:{port}", "", id="system-trust-store"),
    ],
)
async def test_tls_failures_fail_open(table_name: str, cluster: RedisCluster, url: str, ca: str | None):
    ca_file = {None: "", "": "", "wrong": str(cluster.wrong_ca_file)}[ca]
    settings = cluster_settings(
        table_name,
        cluster,
        redis_url=url.format(port=cluster.port),
        redis_tls_ca_file=ca_file,
        redis_retry_after_seconds=60,
    )
    service = Container(settings).sessions
    try:
        saved = await service.upsert_chat_session(ChatSession.new("alice", title="from DynamoDB"))
        assert service.cache.connector.available() is False  # the failure opened the circuit
        loaded = await service.get_chat_session(saved.session_id, "alice")
        assert loaded is not None and loaded.title == "from DynamoDB"
        replay = ReplayLog(service.cache.connector, ttl_seconds=120)
        assert await replay.begin(saved.session_id, "t", None) is False  # resume is off, the turn still runs
    finally:
        await service.aclose()
    assert not any(cluster.keys_per_node().values())  # nothing reached the cluster
