"""Parse an SSE body the way the AI SDK client does (data lines only; ids and comments kept for assertions)."""

from __future__ import annotations

import json
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
