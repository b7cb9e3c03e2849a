"""Regenerate, edit and branch switching over HTTP (moto + real Redis + the offline model on loopback): the bodies
``useChat`` sends, what is stored (never deleted), what the LLM reads, and the refusals."""

from __future__ import annotations

import json
import threading

import boto3
import httpx

from tests.conftest import ChatStack
from tests.integration.test_chat_turns import ui_body
from tests.support.sse import parse_sse


def _regenerate_body(session_id: str, client_view: list[dict], message_id: str | None = None) -> dict:
    body: dict = {"id": session_id, "messages": client_view, "trigger": "regenerate-message"}
    if message_id is not None:  # useChat leaves the key out when regenerate() has no argument
        body["messageId"] = message_id
    return body


def _user(message_id: str, text: str) -> dict:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


def _path(client: httpx.Client, sid: str) -> list[dict]:
    response = client.get(f"/sessions/{sid}/messages?limit=200")
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def _all(client: httpx.Client, sid: str) -> list[dict]:
    return client.get(f"/sessions/{sid}/messages?limit=200&branch=all").json()["messages"]


def _last_prompt(chat: ChatStack) -> list[dict]:
    """The messages of the last answer request the LLM got (not a title request)."""
    answers = [r for r in chat.llm.requests if r.get("tools") is not None or r.get("stream")]
    return answers[-1]["messages"]


def _scan(table: str) -> list[str]:
    return sorted(json.dumps(i, sort_keys=True) for i in boto3.client("dynamodb").scan(TableName=table)["Items"])


def test_regenerate_without_message_id_answers_again_as_a_sibling(chat_stack: ChatStack):
    sid = "branch-regenerate-0001"
    with chat_stack.client() as client:
        first = parse_sse(client.post("/chat", json=ui_body(sid, "Tell me a thing", "u-1")).text)
        old_turn = first.of_type("start")[0]["messageId"]
        requests_before = len(chat_stack.llm.requests)
        response = client.post("/chat", json=_regenerate_body(sid, [_user("u-1", "Tell me a thing")]))
        assert response.status_code == 200, response.text
        again = parse_sse(response.text)
        assert again.done and again.types[-1] == "finish"
        new_turn = again.of_type("start")[0]["messageId"]
        assert new_turn != old_turn and new_turn.startswith("turn_")
        path = _path(client, sid)
        assert [(m["role"], m["turn_id"]) for m in path] == [("user", old_turn), ("assistant", new_turn)]
        everything = _all(client, sid)
        assert [m["seq"] for m in everything] == [1, 2, 3]  # the old answer is kept
        assert [m["parent_seq"] for m in everything] == [0, 1, 1]
        old_answer, new_answer = everything[1], everything[2]
        assert path[1]["versions"] == [old_answer["id"], new_answer["id"]]
        assert path[0]["versions"] is None
        # One new answer request; the user message was not stored twice; the old answer is not in the prompt.
        assert len(chat_stack.llm.requests) == requests_before + 1
        prompt = _last_prompt(chat_stack)
        assert prompt[-1] == {"role": "user", "content": "Tell me a thing"}
        assert [m["role"] for m in prompt] == ["system", "user"]


def test_regenerate_an_earlier_answer_by_its_id_keeps_the_later_exchange(chat_stack: ChatStack):
    sid = "branch-regenerate-0002"
    with chat_stack.client() as client:
        first = parse_sse(client.post("/chat", json=ui_body(sid, "One", "u-1")).text)
        parse_sse(client.post("/chat", json=ui_body(sid, "Two", "u-2")).text)
        first_turn = first.of_type("start")[0]["messageId"]
        view = [_user("u-1", "One")]
        response = client.post("/chat", json=_regenerate_body(sid, view, first_turn))
        assert response.status_code == 200 and parse_sse(response.text).done
        assert _path(client, sid)[0]["content"] == "One"
        assert len(_path(client, sid)) == 2 and len(_all(client, sid)) == 5
        # The versions endpoint names both answers by the id useChat holds (turn id) and by message id.
        versions = client.get(f"/sessions/{sid}/messages/{first_turn}/versions").json()
        assert [v["turn_id"] == first_turn for v in versions["versions"]] == [True, False]
        assert versions["active_index"] == 1


def test_edit_continues_from_a_new_version_and_resend_stays_idempotent(chat_stack: ChatStack):
    sid = "branch-edit-0001"
    with chat_stack.client() as client:
        parse_sse(client.post("/chat", json=ui_body(sid, "What is two plus two", "u-1")).text)
        # useChat's edit: sendMessage({text, messageId}) — same id, new text, messageId = that id.
        edit = ui_body(sid, "What is three plus three", "u-1") | {"messageId": "u-1"}
        edited = parse_sse(client.post("/chat", json=edit).text)
        assert edited.done and 'You said: "What is three plus three"' in edited.text()
        path = _path(client, sid)
        assert [m["content"] for m in path if m["role"] == "user"] == ["What is three plus three"]
        assert len(_all(client, sid)) == 4  # the first version and its answer are kept
        prompt = _last_prompt(chat_stack)
        assert [m["content"] for m in prompt if m["role"] == "user"] == ["What is three plus three"]
        versions = client.get(f"/sessions/{sid}/messages/u-1/versions").json()
        assert [v["content"] for v in versions["versions"]] == ["What is two plus two", "What is three plus three"]
        assert versions["active_index"] == 1
        # The same edit again is a resend: replayed, nothing new stored, no new LLM request.
        requests = len(chat_stack.llm.requests)
        again = client.post("/chat", json=edit)
        assert again.status_code == 200 and parse_sse(again.text).text() == edited.text()
        assert len(_all(client, sid)) == 4 and len(chat_stack.llm.requests) == requests


def test_switching_branches_changes_what_the_llm_reads(chat_stack: ChatStack):
    sid = "branch-switch-0001"
    with chat_stack.client() as client:
        parse_sse(client.post("/chat", json=ui_body(sid, "Apples", "u-1")).text)
        parse_sse(client.post("/chat", json=ui_body(sid, "Pears", "u-1")).text)  # an edit
        first_version = client.get(f"/sessions/{sid}/messages/u-1/versions").json()["versions"][0]
        switched = client.put(f"/sessions/{sid}/branch", json={"message_id": first_version["id"]})
        assert switched.status_code == 200, switched.text
        assert _path(client, sid)[0]["content"] == "Apples"
        assert _path(client, sid)[0]["versions"] == [first_version["id"], _all(client, sid)[2]["id"]]
        parse_sse(client.post("/chat", json=ui_body(sid, "And then?", "u-2")).text)
        prompt = _last_prompt(chat_stack)
        assert [m["content"] for m in prompt if m["role"] == "user"] == ["Apples", "And then?"]
        assert len(_all(client, sid)) == 6


def test_refusals_write_nothing(chat_stack: ChatStack):
    sid = "branch-refuse-0001"
    with chat_stack.client() as client:
        empty = client.post("/sessions", json={}).json()["id"]
        before = _scan(chat_stack.settings.table_name)
        nothing = client.post("/chat", json=_regenerate_body(empty, [_user("u-1", "x")]))
        assert nothing.status_code == 422 and nothing.json()["error"]["code"] == "validation_error"
        assert _scan(chat_stack.settings.table_name) == before
        parse_sse(client.post("/chat", json=ui_body(sid, "Hello", "u-1")).text)
        before = _scan(chat_stack.settings.table_name)
        unknown = client.post("/chat", json=_regenerate_body(sid, [_user("u-1", "Hello")], "turn_unknown"))
        assert unknown.status_code == 404
        assert client.get(f"/sessions/{sid}/messages/nope/versions").status_code == 404
        assert client.put(f"/sessions/{sid}/branch", json={"message_id": "nope"}).status_code == 404
        assert client.put(f"/sessions/{sid}/branch", json={"message_id": "bad id!"}).status_code == 422
        assert client.put(f"/sessions/{sid}/branch", json={}).status_code == 422
        assert client.get(f"/sessions/{sid}/messages?branch=some").status_code == 400
        assert _scan(chat_stack.settings.table_name) == before
    with chat_stack.client("bob") as bob:
        assert bob.post("/chat", json=_regenerate_body(sid, [_user("u-1", "Hello")])).status_code == 404
        assert bob.get(f"/sessions/{sid}/messages/u-1/versions").status_code == 404
        assert bob.put(f"/sessions/{sid}/branch", json={"message_id": "u-1"}).status_code == 404
        assert bob.post("/chat", json=ui_body(sid, "Hijack", "u-1")).status_code == 404
        assert _scan(chat_stack.settings.table_name) == before


def test_regenerate_and_switch_wait_for_a_running_turn(chat_stack: ChatStack):
    sid = "branch-busy-0001"
    with chat_stack.client() as client:
        parse_sse(client.post("/chat", json=ui_body(sid, "Hello", "u-1")).text)
        first_answer = _path(client, sid)[1]["id"]
        done: dict = {}

        def slow_turn() -> None:
            with chat_stack.client() as c:
                done["response"] = c.post("/chat", json=ui_body(sid, "slow [[fault:slow:1500]]", "u-2"))

        requests = len(chat_stack.llm.requests)
        thread = threading.Thread(target=slow_turn)
        thread.start()
        for _ in range(100):
            if len(chat_stack.llm.requests) > requests:
                break
            threading.Event().wait(0.02)
        busy = client.post("/chat", json=_regenerate_body(sid, [_user("u-1", "Hello")]))
        switch = client.put(f"/sessions/{sid}/branch", json={"message_id": first_answer})
        thread.join(timeout=30)
        assert busy.status_code == 409 and switch.status_code == 409, (busy.text, switch.text)
        assert done["response"].status_code == 200
        assert [m["content"] for m in _path(client, sid) if m["role"] == "user"] == [
            "Hello",
            "slow [[fault:slow:1500]]",
        ]
