"""Regenerate, edit and tool approval against the published `ai` clients (the oracle, as `useChat` runs them) and
the real backend: every exchange is accepted and the assembled message equals what the server stored on the
active branch. Approvals are answered in the next POST (levels v6 and v7, the tool part in `approval-responded`)
or through the approvals endpoint (level v5, where the request arrives as a `data-approval` part)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import ChatStack
from tests.contract.test_ai_sdk_contract import BY_LEVEL, CLIENTS, _parts, _texts, _token, oracle
from tests.integration.test_chat_turns import history, ui_body

RENAME = 'Please [[tool:rename_session {"title": "Trip to Rome"}]]'


def _user(message_id: str, text: str) -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


def _chat(chat: ChatStack, client: str, level: str, body: dict[str, Any], **options: Any) -> dict[str, Any]:
    out = oracle("chat", f"{chat.url}/chat", client=client, level=level, token=_token(chat), body=body, **options)
    assert out["status"] == 200 and out["ok"], out["error"]
    return out


def _active(chat: ChatStack, sid: str) -> list[dict[str, Any]]:
    with chat.client() as http:
        return history(chat, http, sid)


@pytest.mark.parametrize(("client", "level"), CLIENTS)
def test_regenerate_without_message_id_is_accepted_and_matches_the_active_branch(
    chat_stack: ChatStack, client: str, level: str
):
    sid = f"contract-regenerate-{client}"
    first = _chat(chat_stack, client, level, ui_body(sid, "Tell me something", "u-1"))
    # regenerate() with no argument: the client drops its last answer and leaves messageId out of the body.
    body = {"id": sid, "messages": [_user("u-1", "Tell me something")], "trigger": "regenerate-message"}
    again = _chat(chat_stack, client, level, body)
    assert again["message"]["id"] != first["message"]["id"]
    stored = _active(chat_stack, sid)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["turn_id"] == again["message"]["id"] and _texts(again["message"]) == stored[1]["content"]
    assert stored[1]["versions"] is not None and len(stored[1]["versions"]) == 2


@pytest.mark.parametrize(("client", "level"), CLIENTS)
def test_edit_is_accepted_and_matches_the_active_branch(chat_stack: ChatStack, client: str, level: str):
    sid = f"contract-edit-{client}"
    _chat(chat_stack, client, level, ui_body(sid, "First wording", "u-1"))
    # sendMessage({text, messageId}): same id, new text, messageId = that id.
    edited = _chat(chat_stack, client, level, ui_body(sid, "Second wording", "u-1") | {"messageId": "u-1"})
    stored = _active(chat_stack, sid)
    assert [m["content"] for m in stored if m["role"] == "user"] == ["Second wording"]
    assert stored[0]["versions"] is not None and len(stored[0]["versions"]) == 2
    assert _texts(edited["message"]) == stored[1]["content"] and 'You said: "Second wording"' in stored[1]["content"]


def _responded(message: dict[str, Any], approved: bool) -> dict[str, Any]:
    """The message after `addToolApprovalResponse`: the tool part in state approval-responded."""
    answered = json.loads(json.dumps(message))
    for part in _parts(answered, "dynamic-tool"):
        part["state"] = "approval-responded"
        part["approval"] = {**part["approval"], "approved": approved}
    return answered


@pytest.mark.parametrize("approved", [True, False])
@pytest.mark.parametrize("client", BY_LEVEL["v6"] + BY_LEVEL["v7"])
def test_approval_in_the_next_post_continues_the_same_message(chat_stack: ChatStack, client: str, approved: bool):
    level = next(at for name, at in CLIENTS if name == client)
    sid = f"contract-approve-{client}-{approved}"
    asked = _chat(chat_stack, client, level, ui_body(sid, RENAME, "u-1"))
    (tool,) = _parts(asked["message"], "dynamic-tool")
    assert tool["state"] == "approval-requested" and tool["toolName"] == "rename_session"
    answered = _responded(asked["message"], approved)
    # What the client POSTs with sendAutomaticallyWhen(lastAssistantMessageIsCompleteWithApprovalResponses).
    body = {
        "id": sid,
        "messages": [_user("u-1", RENAME), answered],
        "trigger": "submit-message",
        "messageId": answered["id"],
    }
    out = _chat(chat_stack, client, level, body, message=answered)
    assert out["message"]["id"] == asked["message"]["id"]
    (tool,) = _parts(out["message"], "dynamic-tool")
    assert tool["state"] == ("output-available" if approved else "output-denied")
    stored = _active(chat_stack, sid)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("tool", "complete" if approved else "denied"),
        ("assistant", "complete"),
    ]
    assert {m["turn_id"] for m in stored[1:]} == {out["message"]["id"]}  # one assistant message
    assert _texts(out["message"]).endswith(stored[3]["content"])
    if approved:
        assert tool["output"] == json.loads(stored[2]["content"]) == {"renamed": True, "title": "Trip to Rome"}
    with chat_stack.client() as http:
        title = http.get(f"/sessions/{sid}").json()["title"]
    assert (title == "Trip to Rome") is approved


@pytest.mark.parametrize("approved", [True, False])
@pytest.mark.parametrize("client", BY_LEVEL["v5"])
def test_v5_approval_through_the_endpoint_continues_the_same_message(
    chat_stack: ChatStack, client: str, approved: bool
):
    sid = f"contract-approve5-{client}-{approved}"
    asked = _chat(chat_stack, client, "v5", ui_body(sid, RENAME, "u-1"))
    (request,) = _parts(asked["message"], "data-approval")
    assert request["data"]["state"] == "requested" and request["data"]["toolName"] == "rename_session"
    approval_id = request["data"]["approvalId"]
    url = f"{chat_stack.url}/chat/{sid}/approvals/{approval_id}"
    body = {"approved": approved, "messages": []}  # a useChat transport adds its own fields; they are ignored
    out = oracle("chat", url, client=client, level="v5", token=_token(chat_stack), body=body, message=asked["message"])
    assert out["status"] == 200 and out["ok"], out["error"]
    assert out["message"]["id"] == asked["message"]["id"]
    (tool,) = _parts(out["message"], "dynamic-tool")
    assert tool["state"] == ("output-available" if approved else "output-error")
    stored = _active(chat_stack, sid)
    assert stored[2]["status"] == ("complete" if approved else "denied")
    assert _texts(out["message"]).endswith(stored[3]["content"])
