"""The title of a new conversation: generated from its first message by a cheap model, concurrently with the
answer, within a time budget. A failure leaves the title empty and never fails the turn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from chatcore.errors import ChatError
from chatcore.models import ChatSession
from chatcore.observability import logger
from chatcore.ports import ChatModel, SessionRepository
from chatcore.stream import StreamData, StreamEvent

TITLE_PROMPT = (
    "Write a short title (at most 6 words) for a conversation that starts with the message below. "
    "Answer with the title only, no quotes."
)
LATE_TITLE_SECONDS = 2.0  # how long the end of a turn waits for a title still being generated


def clean_title(raw: str) -> str:
    title = raw.strip().splitlines()[0] if raw.strip() else ""
    title = title.strip().strip("\"'“”*#").strip()
    return title[:80]


async def generate_title(llm: ChatModel, text: str, *, budget_seconds: float) -> str | None:
    try:
        async with asyncio.timeout(budget_seconds):
            raw, _ = await llm.complete(
                [{"role": "system", "content": TITLE_PROMPT}, {"role": "user", "content": f"Message:\n{text[:2000]}"}],
                model=llm.title_model,
                max_tokens=20,
            )
        return clean_title(raw) or None
    except (ChatError, TimeoutError) as exc:
        logger.info("no title generated", error=repr(exc))
        return None


class TitleTask:
    """A title being generated during a turn. When ready it rides along in the turn's next write (a separate
    update would bump the version under the turn and make its write retry), is published once as a ``data-title``
    part, and is saved on its own only when it arrives after the turn's last write."""

    def __init__(self, task: asyncio.Task[str | None] | None) -> None:
        self._task = task
        self._saved = False
        self._published = False

    @classmethod
    def start(cls, llm: ChatModel, text: str, *, budget_seconds: float) -> TitleTask:
        return cls(asyncio.create_task(generate_title(llm, text, budget_seconds=budget_seconds)))

    @classmethod
    def none(cls) -> TitleTask:
        return cls(None)

    def _ready(self) -> str | None:
        task = self._task
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    def take(self, session: ChatSession) -> None:
        """Put a ready title into the session about to be written."""
        title = self._ready()
        if title and not self._saved and not session.title:
            session.propose_title(title)
            self._saved = True

    def publish(self, publish: Callable[[StreamEvent], None]) -> None:
        """Publish a ready title, once."""
        title = self._ready()
        if title and not self._published:
            publish(StreamData.of("title", {"title": title}, id="title"))
            self._published = True

    async def finish(
        self, sessions: SessionRepository, session_id: str, publish: Callable[[StreamEvent], None]
    ) -> None:
        """After the turn's last write: wait briefly for a late title, publish it, save it if no write took it."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), timeout=LATE_TITLE_SECONDS)
        self.publish(publish)
        title = self._ready()
        if title and not self._saved:
            with contextlib.suppress(ChatError):
                await sessions.propose_title(session_id, title)
            self._saved = True
