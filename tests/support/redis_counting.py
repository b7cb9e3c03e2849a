"""Redis round trips, recorded: a ``RedisConnector`` whose clients note every command they send, and every pipeline
as one round trip holding its commands (redis-py writes a pipeline's commands at once and then reads the replies).
Injected with ``Container(settings, connector=CountingConnector(url))``; nothing is patched."""

from __future__ import annotations

from typing import Any

from chatcore.cache import RedisConnector

Command = tuple[str, ...]  # ("hget", "chat:session:...", "d")


def _command(name: str, args: tuple[Any, ...]) -> Command:
    return (name, *(a.decode() if isinstance(a, bytes) else str(a) for a in args))


class _Pipeline:
    def __init__(self, pipe: Any, trips: list[list[Command]]) -> None:
        self._pipe = pipe
        self._trips = trips
        self._queued: list[Command] = []

    async def __aenter__(self) -> _Pipeline:
        await self._pipe.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._pipe.__aexit__(*exc)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        self._trips.append(self._queued)
        self._queued = []
        return await self._pipe.execute(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        def queue(*args: Any, **kwargs: Any) -> _Pipeline:
            self._queued.append(_command(name, args))
            getattr(self._pipe, name)(*args, **kwargs)
            return self

        return queue


class _Client:
    def __init__(self, client: Any, trips: list[list[Command]]) -> None:
        self._client = client
        self._trips = trips

    def pipeline(self, *args: Any, **kwargs: Any) -> _Pipeline:
        return _Pipeline(self._client.pipeline(*args, **kwargs), self._trips)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def send(*args: Any, **kwargs: Any) -> Any:
            self._trips.append([_command(name, args)])
            return method(*args, **kwargs)

        return send


class CountingConnector(RedisConnector):
    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.trips: list[list[Command]] = []  # each round trip: the commands it sent

    def client(self, *, blocking: bool = False) -> Any:
        return _Client(super().client(blocking=blocking), self.trips)

    def touching(self, key: str) -> list[list[Command]]:
        """The round trips that sent a command naming ``key``."""
        return [trip for trip in self.trips if any(key in command[1:] for command in trip)]
