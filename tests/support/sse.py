"""Parse an SSE body the way the AI SDK client does (data lines only; ids and comments kept for assertions)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ParsedStream:
    chunks: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def types(self) -> list[str]:
        return [c["type"] for c in self.chunks]

    def text(self) -> str:
        return "".join(c["delta"] for c in self.chunks if c["type"] == "text-delta")

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [c for c in self.chunks if c["type"] == kind]


def parse_sse(body: str) -> ParsedStream:
    parsed = ParsedStream()
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        event_id: str | None = None
        for line in block.split("\n"):
            if line.startswith(":"):
                parsed.comments.append(line[1:].strip())
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = line[6:]
                if data == "[DONE]":
                    parsed.done = True
                else:
                    assert not parsed.done, "data after [DONE]"
                    parsed.chunks.append(json.loads(data))
                    parsed.ids.append(event_id)
    return parsed


async def sse_data(pieces: AsyncIterator[str]) -> AsyncIterator[str]:
    """The data of each SSE event as it arrives (``[DONE]`` included), from a body read incrementally
    (``response.aiter_text()``): the benchmarks time each chunk's arrival."""
    buffer = ""
    async for piece in pieces:
        buffer += piece
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            for line in block.split("\n"):
                if line.startswith("data: "):
                    yield line[6:]
