"""Redis is a cache: when it is down or slow, everything DynamoDB can serve still works."""

from __future__ import annotations

import pytest

from chatcore.config import Settings
from chatcore.container import Container
from chatcore.models import ChatMessage, ChatSession
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.anyio


async def test_redis_stopped_mid_life(table_name: str):
    server = RedisServer().start()
    service = Container(Settings(table_name=table_name, redis_url=server.url, redis_retry_after_seconds=60)).sessions
    try:
        saved = await service.upsert_chat_session(ChatSession.new("alice"))
        server.stop()
        saved.messages.append(ChatMessage(role="user", content="still works"))
        saved = await service.upsert_chat_session(saved)
        loaded = await service.get_chat_session(saved.session_id, "alice")
        assert loaded is not None and [m.content for m in loaded.messages] == ["still works"]
        assert await service.update_session_title(saved.session_id, "t", "alice") is not None
        assert await service.delete_session(saved.session_id, "alice") is True
    finally:
        await service.aclose()
        server.stop()


async def test_unreachable_redis_opens_the_circuit(table_name: str):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    service = Container(Settings(table_name=table_name, redis_url=url, redis_retry_after_seconds=60)).sessions
    try:
        saved = await service.upsert_chat_session(ChatSession.new("alice"))
        # The first failure opens the circuit: later reads do not try to connect again.
        assert service.cache._redis.available() is False
        for _ in range(20):
            assert await service.get_chat_session(saved.session_id, "alice") is not None
    finally:
        await service.aclose()


async def test_every_route_works_with_redis_stopped(table_name: str):
    import httpx

    from chatcore.auth import Authenticator
    from chatcore.web.sessions_app import create_sessions_app
    from tests.support.tokens import SECRET, auth_header

    server = RedisServer().start()
    settings = Settings(table_name=table_name, redis_url=server.url, jwt_secret=SECRET)
    service = Container(settings).sessions
    app = create_sessions_app(service, Authenticator(settings), settings)
    headers = auth_header("alice")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            warm = (await client.post("/sessions", json={"title": "cached"}, headers=headers)).json()["id"]
            assert (await client.get(f"/sessions/{warm}", headers=headers)).status_code == 200
            server.stop()
            created = await client.post("/sessions", json={"title": "no cache"}, headers=headers)
            assert created.status_code == 201
            sid = created.json()["id"]
            assert (await client.get("/health")).status_code == 200
            assert len((await client.get("/sessions", headers=headers)).json()["sessions"]) == 2
            assert (await client.get(f"/sessions/{sid}", headers=headers)).status_code == 200
            assert (await client.get(f"/sessions/{warm}/messages", headers=headers)).status_code == 200
            renamed = await client.patch(f"/sessions/{warm}", json={"title": "renamed"}, headers=headers)
            assert renamed.status_code == 200
            assert (await client.get(f"/sessions/{warm}", headers=headers)).json()["title"] == "renamed"
            assert (await client.delete(f"/sessions/{sid}", headers=headers)).status_code == 204
            batch = await client.post("/sessions/batch-delete", json={"session_ids": [warm]}, headers=headers)
            assert batch.json() == {"deleted": [warm], "not_found": []}
            assert (await client.get(f"/sessions/{warm}", headers=headers)).status_code == 404
    finally:
        await service.aclose()
        server.stop()
