"""The LLM: any OpenAI-compatible chat-completions endpoint, through the official ``openai`` async client.

``stream()`` yields text deltas, tool-call fragments (keyed by index, as OpenAI streams them) and a final
``Finished`` with the finish reason and usage. Transient failures (429, 5xx, timeouts, connection errors) are
retried with backoff **only before anything was yielded**: once output reached the caller, a failure is raised
as ``LLMError`` and the turn decides what to keep.

Each attempt waits at most ``LLM_FIRST_TOKEN_SECONDS`` for its first output (text or a tool call), separately from
the request timeout ``LLM_TIMEOUT_SECONDS`` that bounds every read after it: a hung model is abandoned and retried
after the first-token deadline, so it is reported after (retries + 1) first-token deadlines plus backoff, not after
as many whole request timeouts. With a ``deadline`` (the turn's, from ``FUNCTION_TIMEOUT_SECONDS``) no retry starts
that could not get its first output before it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from chatcore.config import Settings
from chatcore.errors import ConfigError
from chatcore.errors import LLMError as LLMError  # re-exported: the turn catches it from here
from chatcore.models import Usage
from chatcore.observability import logger


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True)
class Finished:
    reason: str | None
    usage: Usage | None


LLMDelta = TextDelta | ToolCallDelta | Finished

_RETRYABLE = (openai.RateLimitError, openai.APIConnectionError, openai.InternalServerError)


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, (*_RETRYABLE, TimeoutError)):  # APITimeoutError is an APIConnectionError; TimeoutError: ours
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def _usage(raw: Any) -> Usage | None:
    if raw is None:
        return None
    return Usage(
        prompt_tokens=raw.prompt_tokens or 0,
        completion_tokens=raw.completion_tokens or 0,
        total_tokens=raw.total_tokens or 0,
    )


async def _closing(stream: Any) -> AsyncGenerator[Any]:
    """Iterate an OpenAI stream and always close its HTTP response (also when the consumer stops early)."""
    try:
        async for chunk in stream:
            yield chunk
    finally:
        await stream.close()


def require_llm_key(settings: Settings) -> None:
    """The default endpoint is OpenAI's, which needs a key (a custom ``LLM_BASE_URL`` may not): without one the chat
    function answers 503 naming the setting instead of failing every turn with the provider's 401."""
    if not settings.llm_api_key and not settings.llm_base_url:
        raise ConfigError(
            "no LLM API key: set LLM_API_KEY_SECRET_ARN (template parameter LlmApiKeySecretArn), "
            "or LLM_BASE_URL for a server that needs none"
        )


class LLM:
    def __init__(self, settings: Settings, *, client: openai.AsyncOpenAI | None = None) -> None:
        self.model = settings.llm_model
        self.title_model = settings.llm_title_model or settings.llm_model
        self._settings = settings
        self._client = client
        self._max_retries = settings.llm_max_retries
        self.backoff: Callable[[int], float] = lambda attempt: min(8.0, 0.5 * 2**attempt) * random.uniform(0.5, 1)  # noqa: S311

    @property
    def client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                api_key=self._settings.llm_api_key or "not-needed",
                base_url=self._settings.llm_base_url or None,
                timeout=self._settings.llm_timeout_seconds,
                max_retries=0,  # retries are ours: only before any output
            )
        return self._client

    async def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        model: str | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[LLMDelta]:
        kwargs: dict[str, Any] = {
            "model": model or self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            kwargs["tools"] = tools
            if tool_choice:
                kwargs["tool_choice"] = tool_choice
        loop = asyncio.get_running_loop()
        first_wait = min(self._settings.llm_first_token_seconds, self._settings.llm_timeout_seconds)
        attempt = 0
        while True:
            produced = False
            try:
                first_by: float | None = loop.time() + first_wait  # the first output's deadline; lifted when it came
                stream = await asyncio.wait_for(self.client.chat.completions.create(**kwargs), first_wait)
                reason: str | None = None
                usage: Usage | None = None
                chunks = _closing(stream)
                try:
                    while True:
                        try:
                            if first_by is None:
                                chunk = await anext(chunks)
                            else:
                                chunk = await asyncio.wait_for(anext(chunks), max(0.0, first_by - loop.time()))
                        except StopAsyncIteration:
                            break
                        if chunk.usage is not None:
                            usage = _usage(chunk.usage)
                        if not chunk.choices:
                            continue
                        choice = chunk.choices[0]
                        delta = choice.delta
                        if delta is not None and delta.content:
                            produced, first_by = True, None
                            yield TextDelta(delta.content)
                        for call in (delta.tool_calls if delta is not None else None) or []:
                            produced, first_by = True, None
                            function = call.function
                            yield ToolCallDelta(
                                index=call.index,
                                id=call.id,
                                name=function.name if function else None,
                                arguments=(function.arguments or "") if function else "",
                            )
                        if choice.finish_reason:
                            reason = choice.finish_reason
                finally:
                    await chunks.aclose()  # closes the HTTP response also when our consumer stopped early
                yield Finished(reason, usage)
                return
            except (openai.OpenAIError, TimeoutError) as exc:
                delay = self.backoff(attempt)
                # No attempt that could not get its first output before the function is stopped.
                out_of_time = deadline is not None and loop.time() + delay + first_wait > deadline
                if produced or not _retryable(exc) or attempt >= self._max_retries or out_of_time:
                    logger.warning(
                        "llm request failed",
                        error=repr(exc),
                        attempt=attempt,
                        after_output=produced,
                        out_of_time=out_of_time,
                    )
                    raise LLMError("the language model failed") from exc
                logger.info("llm request retried", error=repr(exc), attempt=attempt, delay=delay)
                attempt += 1
                await asyncio.sleep(delay)

    async def complete(
        self, messages: list[dict[str, Any]], *, model: str | None = None, max_tokens: int = 256
    ) -> tuple[str, Usage | None]:
        """One non-streamed answer (titles, summaries)."""
        try:
            kwargs: dict[str, Any] = {"model": model or self.model, "messages": messages, "max_tokens": max_tokens}
            response: ChatCompletion = await self.client.chat.completions.create(**kwargs, stream=False)
        except openai.OpenAIError as exc:
            raise LLMError("the language model failed") from exc
        content = response.choices[0].message.content if response.choices else None
        return (content or "").strip(), _usage(response.usage)

    def renew(self) -> None:
        """Forget the HTTP client, unclosed (after a SnapStart restore its pool's connections are gone); the next
        request makes a new one. An injected client is forgotten too."""
        self._client = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
