"""Each HTTP app against the OpenAPI document it serves, with schemathesis's engine (what its CLI runs): every phase
(the document's examples, the coverage cases: boundaries, each constraint broken, undocumented methods, missing
auth; fuzzing; and stateful runs along the document's links: a created session is read, patched, listed and
deleted, a started chat is resumed and stopped), every check. So: no 5xx, a request valid by the document is
accepted (or is 401/404/409), one invalid by it is refused, responses and statuses are the documented ones, a 405
names the path's methods in ``Allow``. Bounded and derandomized: the same cases each run, a minute or two for all.
The callback app's requests are signed by a ``requests`` auth over the exact bytes sent."""

from __future__ import annotations

import base64
import json
import re
import time
from collections import Counter
from typing import Any
from urllib.parse import urlparse

import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis.engine import events

from chatcore.signing import signed_headers
from tests.conftest import ChatStack
from tests.hostile.conftest import token

MAX_EXAMPLES = 10


def _cursor(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


# The two opaque cursor formats of the sessions document: any well-formed cursor is a valid request (the page after
# that point), whether or not a page gave it.
schemathesis.openapi.format(
    "session-cursor",
    st.builds(
        lambda moment, sid: _cursor({"u": moment.isoformat(), "s": sid}),
        st.datetimes(),
        st.from_regex(r"\A[A-Za-z0-9_-]{8,40}\Z"),
    ),
)
schemathesis.openapi.format("message-cursor", st.integers(0, 10**9 - 1).map(lambda after: _cursor({"a": after})))
# A replay-log entry id (Last-Event-ID); a format, as schemathesis's coverage phase narrows header values to letters and
# digits, which the pattern's "-" then cannot meet.
schemathesis.openapi.format(
    "replay-entry-id", st.tuples(st.integers(0, 2**40), st.integers(0, 99)).map(lambda at: f"{at[0]}-{at[1]}")
)

# The rule the chat document states in prose (JSON Schema cannot speak of the last item of an array): only the last
# message is read, and it must be a user message with text, or an assistant message answering approvals. A request
# valid by the schema that breaks it is refused with these messages, and that is no disagreement.
LAST_MESSAGE_RULE = {
    "the last message must be the user's (or an answer to a tool approval)",
    "the message is empty",
    "the message is too long",
    "invalid message id",
}


def _breaks_the_prose_rule(failure: Any, response: Any) -> bool:
    if type(failure).__name__ != "RejectedPositiveData" or response is None or response.status_code != 422:
        return False
    if not failure.operation.startswith("POST /chat"):
        return False
    error = json.loads(response.content)["error"]
    return error["message"] in LAST_MESSAGE_RULE and all(
        d["loc"][0] in ("messages", "message") for d in error["details"]
    )


class Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["authorization"] = f"Bearer {self.token}"
        return request


class Signed(requests.auth.AuthBase):
    """The callback signature over the prepared request: its method, path and body bytes as sent."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.clock = time.time()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        raw = body.encode() if isinstance(body, str) else body
        # A new timestamp each time: the same bytes signed twice in one second would be a replay (401).
        self.clock += 0.001
        path = urlparse(request.url or "").path
        request.headers.update(signed_headers(self.secret, request.method or "POST", path, raw, now=self.clock))
        return request


def run(stack: ChatStack, document: str, auth: requests.auth.AuthBase) -> tuple[Counter[str], list[str]]:
    """Run every phase against the document; (the requests sent in each phase, every failure and error)."""
    schema = schemathesis.openapi.from_url(f"{stack.url}{document}")
    schema.config.update(base_url=stack.url, continue_on_failure=True, request_timeout=30)
    schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")
    schema.auth.set_from_requests(auth)
    problems: list[str] = []
    phases: Counter[str] = Counter()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            phases[str(getattr(event, "phase", "fuzzing"))] += len(event.recorder.interactions)
            for case_id, checks in event.recorder.checks.items():
                interaction = event.recorder.interactions.get(case_id)
                response = interaction.response if interaction is not None else None
                for check in checks:
                    if check.failure_info is None:
                        continue
                    failure = check.failure_info.failure
                    if _breaks_the_prose_rule(failure, response):
                        continue
                    answer = response.content[:300] if response is not None else b""
                    problems.append(
                        f"{failure.operation}: {failure.title}\n{failure.message}\n{check.failure_info.code_sample}\n"
                        f"answer: {answer!r}"
                    )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"error: {event!r}")
        elif isinstance(event, events.EngineFinished):
            problems.extend(f"{failure.operation}: {failure.title}\n{failure.message}" for failure in event.failures)
    print(f"{document}: {phases.total()} requests {dict(phases)}")
    return phases, sorted(set(problems))


def _clean(phases: Counter[str], problems: list[str]) -> None:
    assert problems == [], "\n\n".join(problems)
    assert all(phases[phase] > 0 for phase in ("coverage", "fuzzing", "stateful")), phases


def test_sessions_app_keeps_its_document(hostile_stack: ChatStack) -> None:
    _clean(*run(hostile_stack, "/sessions/openapi.json", Bearer(token(hostile_stack, "schemathesis-user"))))


def test_chat_app_keeps_its_document(hostile_stack: ChatStack) -> None:
    _clean(*run(hostile_stack, "/chat/openapi.json", Bearer(token(hostile_stack, "schemathesis-chat-user"))))


def test_callback_app_keeps_its_document(hostile_stack: ChatStack) -> None:
    _clean(*run(hostile_stack, "/operations/openapi.json", Signed(hostile_stack.settings.callback_secret)))


@pytest.mark.parametrize("document", ["/sessions/openapi.json", "/chat/openapi.json", "/operations/openapi.json"])
def test_a_405_names_every_documented_method_of_the_path(hostile_stack: ChatStack, document: str) -> None:
    """Starlette answered a 405 with the methods of the first route of the path only (GET, HEAD for PATCH on
    /sessions/{id}); the apps serve one route per path."""
    methods = {"get", "put", "post", "delete", "patch"}
    doc = requests.get(f"{hostile_stack.url}{document}", timeout=30).json()
    templates = {t: re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", t) + "$") for t in doc["paths"]}
    for template, item in doc["paths"].items():
        documented = {m.upper() for m in item if m in methods}
        path = template.format(session_id="abcdefgh1234", message_id="turn_x", approval_id="a1", operation_id="op_1")
        # Not a method of another path that also matches (DELETE /sessions/batch-delete is a session's DELETE).
        taken = {m for t, item2 in doc["paths"].items() if t != template and templates[t].match(path) for m in item2}
        wrong = sorted(m.upper() for m in methods - {m.lower() for m in documented} - taken)[0]
        response = requests.request(wrong, f"{hostile_stack.url}{path}", timeout=30)
        assert response.status_code == 405, (wrong, path)
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert allowed - {"HEAD"} == documented, (path, allowed)
