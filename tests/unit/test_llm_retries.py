"""The LLM client's retry policy against a model that refuses every connection (a fake ``openai`` client): retries
only before output, and none that could not get its first output before the turn's deadline (issue 12 item 3)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from chatcore.config import Settings
from chatcore.llm import LLM, LLMError

pytestmark = pytest.mark.anyio


class _Failing:
    """Stands for ``openai.AsyncOpenAI``: every ``chat.completions.create`` fails to connect, or never answers."""

    def __init__(self, *, hang: bool) -> None:
        self.calls = 0
        self.hang = hang
        self.chat = self
        self.completions = self

    async def create(self, **_: Any) -> Any:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        raise openai.APIConnectionError(request=httpx.Request("POST", "http://model.invalid/v1/chat/completions"))


async def _attempts(deadline_in: float | None, *, hang: bool = False) -> int:
    client = _Failing(hang=hang)
    settings = Settings(llm_max_retries=5, llm_first_token_seconds=0.1 if hang else 1.0)
    llm = LLM(settings, client=client)
    llm.backoff = lambda attempt: 0.0
    loop = asyncio.get_running_loop()
    deadline = None if deadline_in is None else loop.time() + deadline_in
    with pytest.raises(LLMError):
        async for _ in llm.stream([{"role": "user", "content": "hi"}], deadline=deadline):
            pass
    return client.calls


async def test_without_a_deadline_every_retry_is_made():
    assert await _attempts(None) == 6


async def test_no_retry_starts_that_could_not_answer_before_the_deadline():
    # The first attempt fails at once; another would need up to 1 s for its first output, and 0.5 s are left.
    assert await _attempts(0.5) == 1
    assert await _attempts(5.0) == 6  # room for all of them
    # A silent model: each attempt is abandoned at the 0.1 s first-token deadline; with 0.25 s, a third would end
    # after the deadline (without one, all six are made).
    assert await _attempts(0.25, hang=True) == 2
    assert await _attempts(None, hang=True) == 6


def test_the_function_timeout_setting():
    assert Settings.from_env({}).function_timeout_seconds == 0
    assert Settings.from_env({"FUNCTION_TIMEOUT_SECONDS": "300"}).function_timeout_seconds == 300
