"""The offline LLM, driven by the real ``openai`` client over loopback HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import openai
import pytest

from local.offline_llm import OFFLINE_NOTE, FaultQueue, OfflineLLM, parse_directives, parse_fault, split_tokens

pytestmark = pytest.mark.anyio

TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
    for name in ("current_time", "calculator", "search")
]


@pytest.fixture(scope="module")
def server() -> Iterator[OfflineLLM]:
    with OfflineLLM() as llm:
        yield llm


@pytest.fixture
def llm(server: OfflineLLM) -> Iterator[OfflineLLM]:
    server.reset()
    server.first_token_delay = server.token_delay = 0.0
    yield server
    server.reset()


@pytest.fixture
async def client(llm: OfflineLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="offline", max_retries=0, timeout=10)
    yield client
    await client.close()


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


async def stream(client: openai.AsyncOpenAI, messages: list[dict], **kwargs) -> list:
    response = await client.chat.completions.create(model="offline-chat", messages=messages, stream=True, **kwargs)
    return [chunk async for chunk in response]


async def drain(response, into: list[str]) -> None:
    async for chunk in response:
        into.append((chunk.choices[0].delta.content or "") if chunk.choices else "")


def text_of(chunks: list) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def assemble_tool_calls(chunks: list) -> dict[int, dict]:
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for fragment in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.setdefault(fragment.index, {"id": None, "name": None, "arguments": "", "fragments": 0})
            if fragment.id:
                call["id"], call["name"] = fragment.id, fragment.function.name
                assert fragment.type == "function" and fragment.function.arguments == ""
            elif fragment.function and fragment.function.arguments:
                call["arguments"] += fragment.function.arguments
                call["fragments"] += 1
    return calls


# ----------------------------------------------------------------------------------------- plain answers


async def test_streamed_answer_equals_the_non_streamed_one(client):
    messages = user("Hello there, offline model. How are you?")
    whole = await client.chat.completions.create(model="any-model", messages=messages)
    chunks = await stream(client, messages)

    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].choices[0].delta.content is None
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert sum(1 for c in chunks if c.choices[0].delta.content) > 5  # token by token
    assert text_of(chunks) == whole.choices[0].message.content
    assert whole.choices[0].message.content == f'You said: "Hello there, offline model. How are you?". {OFFLINE_NOTE}'
    assert whole.model == "any-model" and whole.choices[0].finish_reason == "stop"
    assert whole.usage.prompt_tokens == 7 + 4
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


async def test_usage_chunk_with_include_usage(client):
    chunks = await stream(client, user("count me"), stream_options={"include_usage": True})
    *body, last = chunks
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None and c.choices for c in body)
    content_chunks = [c for c in body if c.choices[0].delta.content]
    assert last.usage.completion_tokens == len(content_chunks)
    assert last.usage.prompt_tokens == 2 + 4
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


async def test_long_directive_and_max_tokens(client):
    chunks = await stream(client, user("go on [[long:50]]"), stream_options={"include_usage": True})
    assert len(text_of(chunks).split()) == 50 and chunks[-1].usage.completion_tokens == 50

    cut = await client.chat.completions.create(model="m", messages=user("[[long:50]]"), max_tokens=7)
    assert len(cut.choices[0].message.content.split()) == 7 and cut.choices[0].finish_reason == "length"


async def test_title_request(client):
    messages = [
        {"role": "system", "content": "Write a short title for this conversation."},
        {"role": "user", "content": "Message:\nplease help me plan a trip to Lisbon next spring!"},
    ]
    titled = await client.chat.completions.create(model="mini", messages=messages, max_tokens=20)
    assert titled.choices[0].message.content == "Please Help Me Plan A"

    prefixed = [{"role": "user", "content": "Give this chat a title.\nMessage: the AWS bill went up, why?"}]
    named = await client.chat.completions.create(model="mini", messages=prefixed, max_completion_tokens=16)
    assert named.choices[0].message.content == "The AWS Bill Went Up"

    short = await client.chat.completions.create(model="mini", messages=user("title: hello world!"), max_tokens=30)
    assert short.choices[0].message.content == "Title: Hello World"

    not_cheap = await client.chat.completions.create(model="mini", messages=messages)
    assert not_cheap.choices[0].message.content.startswith("You said:")


async def test_summary_request(client):
    messages = [
        {"role": "system", "content": "Summarize the conversation."},
        {"role": "user", "content": "I want to visit Lisbon. Also Porto maybe."},
        {"role": "assistant", "content": "Sounds great."},
        {"role": "user", "content": "What about trains? They are cheap."},
    ]
    summary = await client.chat.completions.create(model="m", messages=messages)
    assert summary.choices[0].message.content == "Summary: I want to visit Lisbon. What about trains?"


# ----------------------------------------------------------------------------------------- tools


async def test_tool_call_streamed_in_fragments(client):
    args = {"query": "weather in Lisbon", "limit": 3}
    chunks = await stream(client, user(f"look it up [[tool:search {json.dumps(args)}]]"), tools=TOOLS)

    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    calls = assemble_tool_calls(chunks)
    assert list(calls) == [0]
    call = calls[0]
    assert call["name"] == "search" and call["id"].startswith("call_")
    assert json.loads(call["arguments"]) == args and 2 <= call["fragments"] <= 4

    again = await client.chat.completions.create(
        model="m", messages=user(f"look it up [[tool:search {json.dumps(args)}]]"), tools=TOOLS
    )
    (whole,) = again.choices[0].message.tool_calls
    assert whole.id == call["id"] and json.loads(whole.function.arguments) == args
    assert again.choices[0].finish_reason == "tool_calls" and again.choices[0].message.content is None


async def test_parallel_tool_calls(client):
    prompt = 'both [[tool:current_time]] and [[tool:calculator {"expression": "6*7"}]]'
    calls = assemble_tool_calls(await stream(client, user(prompt), tools=TOOLS))
    assert [calls[i]["name"] for i in sorted(calls)] == ["current_time", "calculator"]
    assert json.loads(calls[0]["arguments"]) == {} and json.loads(calls[1]["arguments"]) == {"expression": "6*7"}
    assert calls[0]["id"] != calls[1]["id"]

    single = await client.chat.completions.create(
        model="m", messages=user(prompt), tools=TOOLS, parallel_tool_calls=False
    )
    assert [c.function.name for c in single.choices[0].message.tool_calls] == ["current_time"]


async def test_natural_triggers_only_for_listed_tools(client):
    timed = assemble_tool_calls(await stream(client, user("What time is it in Lisbon?"), tools=TOOLS))
    assert timed[0]["name"] == "current_time" and json.loads(timed[0]["arguments"]) == {}

    math = assemble_tool_calls(await stream(client, user("please calculate (2+3)*4?"), tools=TOOLS))
    assert math[0]["name"] == "calculator" and json.loads(math[0]["arguments"]) == {"expression": "(2+3)*4"}

    no_tools = await client.chat.completions.create(model="m", messages=user("what time is it? [[tool:search]]"))
    assert no_tools.choices[0].message.tool_calls is None
    assert no_tools.choices[0].message.content.startswith('You said: "what time is it?"')

    unlisted = await client.chat.completions.create(model="m", messages=user("[[tool:rm_rf]] hi"), tools=TOOLS)
    assert unlisted.choices[0].message.tool_calls is None


async def test_tool_choice(client):
    none = await client.chat.completions.create(model="m", messages=user("time?"), tools=TOOLS, tool_choice="none")
    assert none.choices[0].message.tool_calls is None

    required = await client.chat.completions.create(model="m", messages=user("hi"), tools=TOOLS, tool_choice="required")
    assert required.choices[0].message.tool_calls[0].function.name == "current_time"

    named = await client.chat.completions.create(
        model="m", messages=user("hi"), tools=TOOLS, tool_choice={"type": "function", "function": {"name": "search"}}
    )
    assert named.choices[0].message.tool_calls[0].function.name == "search"


async def test_tool_result_gives_a_text_answer(client):
    first = await client.chat.completions.create(model="m", messages=user("what time is it?"), tools=TOOLS)
    (call,) = first.choices[0].message.tool_calls
    messages = [
        *user("what time is it? [[fault:500]]"),
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"utc": "2025-01-02T03:04:05Z"}'},
    ]
    chunks = await stream(client, messages, tools=TOOLS)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert text_of(chunks) == 'The tool current_time returned: {"utc": "2025-01-02T03:04:05Z"}.'


# ----------------------------------------------------------------------------------------- faults


async def test_rate_limited(client, llm):
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="m", messages=user("hi [[fault:429]]"))
    error = caught.value
    assert error.status_code == 429 and error.response.headers["retry-after"] == "0"
    assert error.code == "rate_limit_exceeded" and error.type == "requests"
    assert error.response.headers["x-request-id"].startswith("req_offline_")


async def test_server_error(client):
    with pytest.raises(openai.InternalServerError) as caught:
        await stream(client, user("hi [[fault:500]]"))
    assert caught.value.status_code == 500 and caught.value.type == "server_error"


async def test_midstream_failure(client):
    received: list[str] = []
    response = await client.chat.completions.create(model="m", messages=user("[[fault:midstream]] hi"), stream=True)
    with pytest.raises(openai.APIError, match="offline model failure") as caught:
        await drain(response, received)
    assert type(caught.value) is openai.APIError
    assert "".join(received).startswith("You said:")

    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="m", messages=user("[[fault:midstream]] hi"))


async def test_hang_times_out(client):
    impatient = client.with_options(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await impatient.chat.completions.create(model="m", messages=user("[[fault:hang]]"))

    response = await impatient.chat.completions.create(model="m", messages=user("[[fault:hang]]"), stream=True)
    with pytest.raises(openai.APITimeoutError):
        await drain(response, [])
    assert time.monotonic() - started < 3


async def test_slow_first_token(client, llm):
    async def first_token_after(messages: list[dict]) -> float:
        started = time.monotonic()
        response = await client.chat.completions.create(model="m", messages=messages, stream=True)
        async for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                elapsed = time.monotonic() - started
                await response.close()
                return elapsed
        raise AssertionError("no content")

    assert await first_token_after(user("hi")) < 0.25
    assert await first_token_after(user("hi [[fault:slow:400]]")) >= 0.4
    llm.first_token_delay = 0.3
    assert await first_token_after(user("hi")) >= 0.3


async def test_token_delay(client, llm):
    llm.token_delay = 0.02
    started = time.monotonic()
    chunks = await stream(client, user("[[long:11]]"))
    assert len(text_of(chunks).split()) == 11 and time.monotonic() - started >= 0.2


async def test_fault_queue_is_consumed_in_order(client, llm):
    llm.faults.push("429", times=2)
    llm.faults.push("500")
    llm.faults.push("midstream")
    assert len(llm.faults) == 4
    for expected in (openai.RateLimitError, openai.RateLimitError, openai.InternalServerError):
        with pytest.raises(expected):
            await stream(client, user("hi"))
    with pytest.raises(openai.APIError, match="offline model failure"):
        await stream(client, user("hi"))
    assert len(llm.faults) == 0
    assert text_of(await stream(client, user("hi"))).startswith("You said:")
    assert len(llm.requests) == 5


async def test_queued_fault_with_client_retries(llm):
    llm.faults.push("500")
    client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="offline", max_retries=1)
    try:
        answer = await client.chat.completions.create(model="m", messages=user("retry me"))
    finally:
        await client.close()
    assert answer.choices[0].message.content.startswith('You said: "retry me"')
    assert len(llm.requests) == 2 and llm.requests[0] == llm.requests[1]


async def test_queued_hang_and_slow(client, llm):
    llm.faults.push("hang")
    with pytest.raises(openai.APITimeoutError):
        await client.with_options(timeout=0.3).chat.completions.create(model="m", messages=user("hi"))
    llm.faults.push("slow:300")
    started = time.monotonic()
    await client.chat.completions.create(model="m", messages=user("hi"))
    assert time.monotonic() - started >= 0.3


async def test_requests_are_recorded(client, llm):
    await stream(
        client,
        [{"role": "system", "content": "be brief"}, *user("hi")],
        tools=TOOLS,
        max_tokens=50,
        temperature=0.2,
        stream_options={"include_usage": True},
    )
    (body,) = llm.requests
    assert body["model"] == "offline-chat" and body["stream"] is True and body["max_tokens"] == 50
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert [t["function"]["name"] for t in body["tools"]] == ["current_time", "calculator", "search"]
    assert body["stream_options"] == {"include_usage": True} and body["temperature"] == 0.2


# ----------------------------------------------------------------------------------------- protocol


async def test_models_and_bad_requests(client, llm):
    models = await client.models.list()
    assert [m.id for m in models.data] == ["offline-chat", "offline-mini"]

    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="m", messages=[])
    async with httpx.AsyncClient(base_url=llm.base_url) as raw:
        nan = await raw.post("/chat/completions", content='{"model": "m", "messages": [], "temperature": NaN}')
        assert nan.status_code == 400 and nan.json()["error"]["type"] == "invalid_request_error"
        sse = await raw.post("/chat/completions", json={"model": "m", "messages": user("hi"), "stream": True})
        assert sse.headers["content-type"].startswith("text/event-stream")
        events = sse.text.split("\n\n")
        assert events[-2:] == ["data: [DONE]", ""] and all(e.startswith("data: ") for e in events[:-1])
        assert "usage" not in json.loads(events[0].removeprefix("data: "))


async def test_stop_ends_a_hanging_stream_promptly():
    before = set(threading.enumerate())
    llm = OfflineLLM(hang_seconds=60).start()
    client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="offline", max_retries=0, timeout=30)
    try:
        response = await client.chat.completions.create(model="m", messages=user("[[fault:hang]]"), stream=True)
        started = time.monotonic()
        await anyio.to_thread.run_sync(llm.stop)
        assert time.monotonic() - started < 2
        assert [chunk async for chunk in response] == []
    finally:
        await client.close()
        llm.stop()
    assert not [t for t in set(threading.enumerate()) - before if t.name == "offline-llm"]


# ----------------------------------------------------------------------------------------- pure parts


def test_directives_are_parsed_and_removed():
    parsed = parse_directives('a [[tool:x {"k": [[1]]}]] b [[fault:429]] [[long:3]] [[tool:y]] [[tool:z {bad]] c')
    assert parsed.tools == (("x", '{"k": [[1]]}'), ("y", "{}"))
    assert [f.status for f in parsed.faults] == [429] and parsed.long_words == 3
    assert " ".join(parsed.text.split()) == "a b [[tool:z {bad]] c"
    assert parse_directives("[[fault:hang]] one\ntwo [[long:2]]").text == "one\ntwo"


def test_tokens_and_fault_specs():
    text = "  Hello,  world!\nSecond line  "
    assert "".join(split_tokens(text)) == text and len(split_tokens(text)) == 5
    assert parse_fault("slow:250").delay_ms == 250 and parse_fault("503").status == 503
    for bad in ("200", "slow", "explode"):
        with pytest.raises(ValueError, match="unknown fault"):
            parse_fault(bad)
    with pytest.raises(ValueError, match="times"):
        FaultQueue().push("429", times=0)


def test_start_and_stop_are_bounded_and_idempotent():
    llm = OfflineLLM()
    llm.stop()  # never started: nothing to do
    with llm:
        assert llm.base_url == f"http://127.0.0.1:{llm.port}/v1" and llm.port > 0
        with pytest.raises(RuntimeError):
            llm.start()
    llm.stop()
