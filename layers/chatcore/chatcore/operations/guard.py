"""The operation guard: ``SET NX EX`` on ``chat:op:{id}`` in Redis, a fast filter against a double start held while
the operation runs. Redis down: taking it succeeds (the record and the execution name still make a start happen
once)."""

from __future__ import annotations

from chatcore.cache import RedisClient, RedisConnector


def guard_key(operation_id: str) -> str:
    return f"chat:op:{operation_id}"


class OperationGuard:
    def __init__(self, connector: RedisConnector, *, seconds: int) -> None:
        self._redis = connector
        self._seconds = seconds

    async def take(self, operation_id: str) -> bool:
        async def call(client: RedisClient) -> bool:
            return bool(await client.set(guard_key(operation_id), "1", nx=True, ex=self._seconds))

        return await self._redis.run("operation.guard", call, True)

    async def release(self, operation_id: str) -> None:
        async def call(client: RedisClient) -> None:
            await client.delete(guard_key(operation_id))

        await self._redis.run("operation.release", call, None)
