"""The web chat page served by the local stack at ``/``, driven in a real (headless) Chromium with Playwright."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    APIResponse,
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Request,
    Route,
    expect,
    sync_playwright,
)

from tests.conftest import ChatStack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
T = 15_000  # ms, for every auto-waiting assertion
ERROR_TEXT = "The assistant could not finish this reply. Please try again."
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, chat_stack: ChatStack) -> Iterator[Page]:
    context = browser.new_context(base_url=chat_stack.url, viewport={"width": 1100, "height": 720})
    page = context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # The browser itself logs every non-2xx response; the tests that expect one (404, 409) cause these.
        if message.type in ("error", "warning") and not message.text.startswith("Failed to load resource"):
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.goto("/")
    expect(page.locator("#user-id")).to_have_value("me", timeout=T)
    yield page
    context.close()
    assert problems == []


def session_id(page: Page) -> str:
    match = re.search(r"#s=([\w-]+)", page.url)
    assert match, page.url
    return match.group(1)


def new_chat(page: Page) -> str:
    page.get_by_role("button", name="+ New chat").click()
    expect(page.locator(".session[aria-current='true']")).to_have_count(1, timeout=T)
    return session_id(page)


def send(page: Page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


def wait_idle(page: Page) -> None:
    """The turn finished: the bubble stopped streaming and Send is enabled again."""
    expect(page.locator(".msg.assistant[data-streaming]")).to_have_count(0, timeout=T)
    expect(page.get_by_role("button", name="Send")).to_be_enabled(timeout=T)


def stored(chat_stack: ChatStack, sid: str, user: str = "me") -> list[dict]:
    with chat_stack.client(user) as client:
        response = client.get(f"/sessions/{sid}/messages", params={"limit": 200})
        assert response.status_code == 200
        return response.json()["messages"]


def test_page_and_static_files_are_served_from_the_stack_origin(chat_stack: ChatStack):
    with chat_stack.client() as client:
        index = client.get("/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        assert index.headers["cache-control"] == "no-store"
        for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
            response = client.get(f"/static/{name}")
            assert response.status_code == 200 and kind in response.headers["content-type"]
        assert client.get("/static/nope.js").status_code == 404
    for path in (Path(__file__).resolve().parents[2] / "local" / "web").iterdir():
        assert "http://" not in path.read_text() and "https://" not in path.read_text(), f"no network: {path}"


def test_send_streams_the_answer_and_the_title(page: Page, chat_stack: ChatStack):
    sid = new_chat(page)
    send(page, "hello there general kenobi")
    answer = page.locator(".msg.assistant").last
    expect(answer).to_contain_text('You said: "hello there general kenobi"', timeout=T)
    expect(page.locator(".msg.user .text")).to_have_text(["hello there general kenobi"])
    expect(page.locator(f".session[data-id='{sid}'] .session-title")).to_have_text(
        "Hello There General Kenobi", timeout=T
    )
    expect(page.locator("#chat-title")).to_have_text("Hello There General Kenobi", timeout=T)
    wait_idle(page)
    assert answer.locator(".text").text_content() == stored(chat_stack, sid)[-1]["content"]


def test_reload_mid_stream_resumes_and_completes(page: Page, chat_stack: ChatStack):
    chat_stack.llm.token_delay = 0.02
    sid = new_chat(page)
    send(page, "[[long:250]]")
    expect(page.locator(".msg.assistant .text")).to_contain_text("Lorem ipsum", timeout=T)
    page.reload()
    # Reopened from the URL hash, the active turn is replayed from its first chunk and followed live.
    expect(page.locator(".msg.assistant[data-streaming]")).to_have_count(1, timeout=T)
    expect(page.locator(".msg.user .text")).to_have_text(["[[long:250]]"], timeout=T)
    page.wait_for_function(
        "document.querySelector('.msg.assistant .text')?.textContent.trim().split(/\\s+/).length === 250",
        timeout=20_000,
    )
    wait_idle(page)
    expect(page.locator(".msg.assistant")).to_have_count(1)
    text = page.locator(".msg.assistant .text").text_content()
    assert session_id(page) == sid
    assert text is not None and len(text.split()) == 250
    assert text == stored(chat_stack, sid)[-1]["content"]


def test_tool_call_renders_a_tool_card(page: Page, chat_stack: ChatStack):
    new_chat(page)
    send(page, "Hi! Can you help me with some arithmetic?")
    wait_idle(page)
    send(page, '[[tool:calculator {"expression":"6*7"}]]')
    card = page.locator(".msg.assistant").last.locator(".tool")
    expect(card.locator(".tool-name")).to_have_text("calculator", timeout=T)
    expect(card.locator(".tool-input")).to_contain_text('"expression": "6*7"', timeout=T)
    expect(card.locator(".tool-output")).to_contain_text('"result": 42', timeout=T)
    expect(card.locator(".tool-status")).to_have_text("done")
    expect(page.locator(".msg.assistant").last.locator(".text")).to_contain_text(
        "The tool calculator returned", timeout=T
    )
    wait_idle(page)
    # The same card is rebuilt from the stored history.
    page.reload()
    card = page.locator(".msg.assistant").last.locator(".tool")
    expect(card.locator(".tool-output")).to_contain_text('"result": 42', timeout=T)
    expect(card.locator(".tool-status")).to_have_text("done")
    if os.environ.get("WRITE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))


def test_rename_and_delete_through_the_ui(page: Page, chat_stack: ChatStack):
    sid = new_chat(page)
    expect(page.locator("#chat-title")).to_have_text("New chat")
    page.get_by_role("button", name="Rename").click()
    page.get_by_label("New title").fill("Trip planning")
    page.get_by_label("New title").press("Enter")
    expect(page.locator(f".session[data-id='{sid}'] .session-title")).to_have_text("Trip planning", timeout=T)
    expect(page.locator("#chat-title")).to_have_text("Trip planning")
    with chat_stack.client("me") as client:
        assert client.get(f"/sessions/{sid}").json()["title"] == "Trip planning"

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.locator(".session")).to_have_count(0, timeout=T)
    expect(page.locator("#chat-title")).to_have_text("No chat open")
    with chat_stack.client("me") as client:
        assert client.get(f"/sessions/{sid}").status_code == 404


def test_a_read_sent_before_a_rename_does_not_undo_it(page: Page, chat_stack: ChatStack):
    # Opening a new chat reads the session; that read is held here until a rename has been answered, then
    # released with what it read (the old title), as a slow response would arrive. The rename stays.
    held: list[tuple[Route, APIResponse]] = []

    def hold(route: Route) -> None:
        if route.request.method == "GET" and not held:
            held.append((route, route.fetch()))
        else:
            route.continue_()

    page.route(re.compile(r"/sessions/[\w-]+$"), hold)
    page.get_by_role("button", name="+ New chat").click()
    page.wait_for_function("document.querySelector('.session[aria-current=true]') !== null", timeout=T)
    sid = session_id(page)
    for _ in range(150):
        if held:
            break
        page.wait_for_timeout(100)
    assert held, "the session read was not sent"
    page.get_by_role("button", name="Rename").click()
    page.get_by_label("New title").fill("Trip planning")
    page.get_by_label("New title").press("Enter")
    title = page.locator(f".session[data-id='{sid}'] .session-title")
    expect(title).to_have_text("Trip planning", timeout=T)

    route, stale = held[0]
    assert stale.json()["title"] == ""
    route.fulfill(response=stale)
    expect(page.locator(".empty")).to_have_text("Send a message to start.", timeout=T)  # the read was applied
    expect(title).to_have_text("Trip planning")
    expect(page.locator("#chat-title")).to_have_text("Trip planning")


class HeldReads:
    """Hold the page's session-list reads (``GET /sessions?limit=50``): each is fetched from the server when the
    page sends it (so it reads what is stored then) and answered only when the test releases it."""

    def __init__(self, page: Page) -> None:
        self.held: list[tuple[Route, APIResponse]] = []
        page.route(re.compile(r"/sessions\?limit=50$"), self._hold)

    def _hold(self, route: Route) -> None:
        self.held.append((route, route.fetch()))

    def wait(self, page: Page, count: int) -> None:
        for _ in range(150):
            if len(self.held) >= count:
                return
            page.wait_for_timeout(100)
        raise AssertionError(f"{count} list reads were not sent (saw {len(self.held)})")

    def release(self, index: int) -> dict:
        route, response = self.held[index]
        body: dict = response.json()
        route.fulfill(response=response)
        return body


def _session(chat_stack: ChatStack, title: str) -> str:
    with chat_stack.client("me") as client:
        created = client.post("/sessions", json={"title": title} if title else {})
        assert created.status_code == 201, created.text
        sid: str = created.json()["id"]
        return sid


def test_a_list_read_sent_before_the_title_was_stored_does_not_undo_the_streamed_title(
    page: Page, chat_stack: ChatStack
):
    # A list read is sent while the session has no title, then held; the first turn streams the generated title;
    # the held read is released with what it read (no title, and another session the page has not seen, which
    # shows the read was applied). The streamed title stays.
    other = _session(chat_stack, "Other chat")
    sid = _session(chat_stack, "")
    reads = HeldReads(page)
    page.get_by_role("button", name="Switch").click()  # same user: the list is read again
    reads.wait(page, 1)
    page.evaluate("sid => { location.hash = '#s=' + sid }", sid)
    expect(page.locator(".session[aria-current='true']")).to_have_count(1, timeout=T)
    send(page, "hello there general kenobi")
    title = page.locator(f".session[data-id='{sid}'] .session-title")
    expect(title).to_have_text("Hello There General Kenobi", timeout=T)
    wait_idle(page)
    reads.wait(page, 2)  # the turn's end reads the list again: held too

    stale = reads.release(0)
    assert {s["id"]: s["title"] for s in stale["sessions"]} == {other: "Other chat", sid: ""}
    expect(page.locator(f".session[data-id='{other}']")).to_have_count(1, timeout=T)  # the read was applied
    expect(title).to_have_text("Hello There General Kenobi")
    expect(page.locator("#chat-title")).to_have_text("Hello There General Kenobi")
    reads.release(1)  # the turn's end's read, with the stored title


def test_a_list_read_sent_before_a_delete_does_not_bring_the_session_back(page: Page, chat_stack: ChatStack):
    # A list read is sent while the session exists, then held until it is deleted through the page; released with
    # what it read (the session, and another one the page has not seen). The deleted session stays gone.
    sid = new_chat(page)
    other = _session(chat_stack, "Other chat")
    reads = HeldReads(page)
    page.get_by_role("button", name="Switch").click()  # same user: the list is read again (and the chat closed)
    reads.wait(page, 1)
    page.evaluate("sid => { location.hash = '#s=' + sid }", sid)
    expect(page.locator(f".session[data-id='{sid}'][aria-current='true']")).to_have_count(1, timeout=T)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.locator(f".session[data-id='{sid}']")).to_have_count(0, timeout=T)

    stale = reads.release(0)
    assert {s["id"] for s in stale["sessions"]} == {sid, other}
    expect(page.locator(f".session[data-id='{other}']")).to_have_count(1, timeout=T)  # the read was applied
    expect(page.locator(f".session[data-id='{sid}']")).to_have_count(0)
    with chat_stack.client("me") as client:
        assert client.get(f"/sessions/{sid}").status_code == 404


def test_switching_user_shows_only_their_sessions(page: Page, chat_stack: ChatStack):
    sid = new_chat(page)
    send(page, "a message from me")
    wait_idle(page)
    expect(page.locator(".session")).to_have_count(1)

    page.get_by_label("User").fill("someone-else")
    page.get_by_role("button", name="Switch").click()
    expect(page.locator(".session")).to_have_count(0, timeout=T)
    expect(page.locator("#no-sessions")).to_be_visible()
    expect(page.locator("#chat-title")).to_have_text("No chat open")
    # The other user's session id does not open (404 for anyone but its owner).
    page.goto("about:blank")
    page.goto(f"/#s={sid}")
    expect(page.locator("#banner")).to_contain_text("404", timeout=T)
    expect(page.locator(".msg")).to_have_count(0)
    expect(page.locator("#user-id")).to_have_value("someone-else")  # remembered across reloads

    page.get_by_label("User").fill("me")
    page.get_by_role("button", name="Switch").click()
    expect(page.locator(f".session[data-id='{sid}']")).to_have_count(1, timeout=T)


def test_midstream_failure_shows_the_error_and_keeps_the_partial_text(page: Page, chat_stack: ChatStack):
    sid = new_chat(page)
    send(page, "[[fault:midstream]] tell me a story")
    answer = page.locator(".msg.assistant").last
    expect(answer.locator(".error-text")).to_have_text(ERROR_TEXT, timeout=T)
    wait_idle(page)
    partial = stored(chat_stack, sid)[-1]
    assert partial["role"] == "assistant" and partial["status"] == "partial" and partial["content"]
    expect(answer.locator(".text")).to_have_text(partial["content"])
    # After a reload the stored partial answer is shown with its marker.
    page.reload()
    expect(page.locator(".msg.assistant .marker")).to_have_text("(stopped/incomplete)", timeout=T)
    expect(page.locator(".msg.assistant .text")).to_have_text(partial["content"])


def test_stop_keeps_the_partial_answer(page: Page, chat_stack: ChatStack):
    chat_stack.llm.token_delay = 0.02
    sid = new_chat(page)
    send(page, "[[long:400]]")
    expect(page.locator(".msg.assistant .text")).to_contain_text("Lorem ipsum", timeout=T)
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".msg.assistant .marker")).to_have_text("(stopped)", timeout=T)
    wait_idle(page)
    last = stored(chat_stack, sid)[-1]
    assert last["status"] == "partial" and 0 < len(last["content"].split()) < 400


def test_a_second_concurrent_turn_shows_the_409(page: Page, chat_stack: ChatStack):
    chat_stack.llm.token_delay = 0.02
    sid = new_chat(page)
    with (
        chat_stack.client("me") as client,
        client.stream("POST", f"/sessions/{sid}/stream", json={"message": "[[long:100]]"}) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        next(lines)
        send(page, "are you there?")
        # The 409 is shown as the server words it. (The backend currently answers a *new* client message id
        # during another turn with duplicate_message's text instead of turn_in_progress's; either is a 409.)
        expect(page.locator("#banner-text")).to_have_text(re.compile(r"^409: \S"), timeout=T)
        expect(page.locator(".msg.user")).to_have_count(0)
        expect(page.get_by_label("Message")).to_have_value("are you there?")
        for _ in lines:
            pass


def test_long_running_tool_fills_in_when_its_continuation_streams(page: Page, chat_stack: ChatStack):
    chat_stack.llm.token_delay = 0.02
    sid = new_chat(page)
    send(page, "Remember: the launch is on Friday.")
    wait_idle(page)
    send(page, "[[tool:summarize_conversation]]")
    card = page.locator(".tool").last
    expect(card.locator(".tool-name")).to_have_text("summarize_conversation", timeout=T)
    # The page resumes on its own: the continuation turn streams in and quotes the tool's result.
    expect(page.locator(".msg.assistant").last).to_contain_text(
        "The tool summarize_conversation returned", timeout=30_000
    )
    wait_idle(page)
    messages = stored(chat_stack, sid)
    tool = next(m for m in messages if m["role"] == "tool")
    assert tool["status"] == "complete" and "Summary:" in tool["content"]
    # Rebuilt from history after a reload: the card shows the saved output.
    page.reload()
    expect(page.locator(".tool").last.locator(".tool-output")).to_contain_text("Summary:", timeout=T)


# ------------------------------------------------------------------------------------------ message controls


def exchange(page: Page, text: str) -> None:
    """Send ``text`` and wait until the offline model's echo of it has been answered in full."""
    send(page, text)
    expect(page.locator(".msg.assistant").last).to_contain_text(f'You said: "{text}"', timeout=T)
    wait_idle(page)


def answer_text(page: Page, index: int = -1) -> Locator:
    answers = page.locator(".msg.assistant")
    return (answers.last if index == -1 else answers.nth(index)).locator(".text")


def test_regenerate_streams_a_new_answer_and_the_arrows_switch_versions(page: Page, chat_stack: ChatStack):
    sid = new_chat(page)
    exchange(page, "hello there")
    # The first answer to the second question breaks off (a partial answer), the regenerated one is whole.
    chat_stack.llm.faults.push("midstream")
    send(page, "tell me about Rome")
    answer = page.locator(".msg.assistant").last
    expect(answer.locator(".error-text")).to_have_text(ERROR_TEXT, timeout=T)
    wait_idle(page)
    partial = stored(chat_stack, sid)[-1]
    assert partial["status"] == "partial"
    expect(answer.locator(".versions")).to_have_count(0)

    posted: list[dict] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/chat"):
            posted.append(request.post_data_json)

    page.on("request", on_request)
    answer.get_by_role("button", name="Regenerate answer").click()
    expect(answer_text(page)).to_contain_text('You said: "tell me about Rome"', timeout=T)
    wait_idle(page)
    assert [(p["trigger"], p["messageId"]) for p in posted] == [("regenerate-message", partial["turn_id"])]
    # In place of the old answer, and the old one is a version, "2 / 2".
    expect(page.locator(".msg.assistant")).to_have_count(2)
    expect(page.locator(".error-text")).to_have_count(0)
    last = page.locator(".msg.assistant").last
    expect(last.locator(".version-count")).to_have_text("2 / 2", timeout=T)
    expect(last.get_by_role("button", name="Next version")).to_be_disabled()
    new = stored(chat_stack, sid)[-1]
    assert new["status"] == "complete" and new["versions"] == [partial["id"], new["id"]]
    assert last.locator(".text").text_content() == new["content"]

    last.get_by_role("button", name="Previous version").click()
    expect(last.locator(".version-count")).to_have_text("1 / 2", timeout=T)
    expect(last.locator(".text")).to_have_text(partial["content"])
    expect(last.locator(".marker")).to_have_text("(stopped/incomplete)")
    assert stored(chat_stack, sid)[-1]["id"] == partial["id"]  # the switch is stored: the active branch
    page.reload()
    last = page.locator(".msg.assistant").last
    expect(last.locator(".version-count")).to_have_text("1 / 2", timeout=T)
    last.get_by_role("button", name="Next version").click()
    expect(last.locator(".version-count")).to_have_text("2 / 2", timeout=T)
    expect(last.locator(".text")).to_have_text(new["content"])
    expect(page.locator(".msg.user .text")).to_have_text(["hello there", "tell me about Rome"])


def test_edit_replaces_the_rest_of_the_conversation_and_keeps_the_old_version(page: Page, chat_stack: ChatStack):
    sid = new_chat(page)
    exchange(page, "first question")
    exchange(page, "second question")
    page.reload()  # the ids come from the stored history now
    first = page.locator(".msg.user").first
    first.get_by_role("button", name="Edit").click()
    page.get_by_label("Edit message").fill("first question, edited")
    page.get_by_role("button", name="Save").click()
    expect(answer_text(page)).to_contain_text('You said: "first question, edited"', timeout=T)
    wait_idle(page)
    expect(page.locator(".msg.user .text")).to_have_text(["first question, edited"])
    expect(page.locator(".msg.assistant")).to_have_count(1)
    expect(first.locator(".version-count")).to_have_text("2 / 2", timeout=T)
    path = stored(chat_stack, sid)
    assert [m["content"] for m in path if m["role"] == "user"] == ["first question, edited"]
    assert len(path[0]["versions"]) == 2

    # The old message and everything after it is one arrow away.
    first.get_by_role("button", name="Previous version").click()
    expect(page.locator(".msg.user .text")).to_have_text(["first question", "second question"], timeout=T)
    expect(page.locator(".msg.assistant")).to_have_count(2)
    expect(answer_text(page, 0)).to_contain_text('You said: "first question"')
    expect(page.locator(".msg.user").first.locator(".version-count")).to_have_text("1 / 2")
    old = stored(chat_stack, sid)
    assert old[0]["client_message_id"] == path[0]["client_message_id"] and old[0]["id"] != path[0]["id"]

    # A message sent in this page (its id is the one the page made) is edited the same way, without a reload.
    page.locator(".msg.user").first.get_by_role("button", name="Next version").click()
    expect(page.locator(".msg.user .text")).to_have_text(["first question, edited"], timeout=T)
    exchange(page, "third question")
    third = page.locator(".msg.user").last
    third.get_by_role("button", name="Edit").click()
    page.get_by_label("Edit message").fill("third question, edited")
    page.get_by_label("Edit message").press("Enter")
    expect(answer_text(page)).to_contain_text('You said: "third question, edited"', timeout=T)
    wait_idle(page)
    expect(page.locator(".msg.user .text")).to_have_text(["first question, edited", "third question, edited"])
    expect(page.locator(".msg.user").last.locator(".version-count")).to_have_text("2 / 2", timeout=T)
    expect(page.locator(".msg.assistant")).to_have_count(2)


def approval_requests(page: Page) -> list[dict]:
    """Every approval answer the page posts: its path, headers and body."""
    seen: list[dict] = []

    def on_request(request: Request) -> None:
        if "/approvals/" in request.url:
            path = urlsplit(request.url).path
            seen.append({"path": path, "headers": request.headers, "body": request.post_data_json})

    page.on("request", on_request)
    return seen


def ask_to_rename(page: Page, protocol: str) -> tuple[str, Locator]:
    """A new chat whose answer asks to run rename_session; returns the session id and the tool card."""
    if protocol != "v5":
        page.goto(f"/?protocol={protocol}")
    sid = new_chat(page)
    send(page, "rename this chat to Trip to Rome")
    card = page.locator(".msg.assistant").last.locator(".tool")
    expect(card.locator(".tool-name")).to_have_text("rename_session", timeout=T)
    expect(card.locator(".tool-input")).to_contain_text('"title": "Trip to Rome"', timeout=T)
    wait_idle(page)
    expect(card.locator(".tool-status")).to_have_text("waiting for your approval")
    expect(card.get_by_role("button", name="Approve")).to_be_enabled()
    expect(page.locator(f".session[data-id='{sid}'] .session-title")).to_have_text("Rename This Chat To Trip")
    return sid, card


@pytest.mark.parametrize("protocol", ["v5", "v7"])
def test_approve_runs_the_tool_renames_the_chat_and_the_answer_goes_on(
    page: Page, chat_stack: ChatStack, protocol: str
):
    sid, card = ask_to_rename(page, protocol)
    sent = approval_requests(page)
    card.get_by_role("button", name="Approve").click()
    expect(card.locator(".tool-output")).to_contain_text('"title": "Trip to Rome"', timeout=T)
    expect(card.locator(".tool-status")).to_have_text("done")
    expect(card.get_by_role("button", name="Approve")).to_have_count(0)
    # The continuation is rendered into the same assistant message, and the sidebar shows the new title.
    expect(page.locator(".msg.assistant")).to_have_count(1)
    expect(answer_text(page)).to_contain_text("The tool rename_session returned", timeout=T)
    expect(page.locator(f".session[data-id='{sid}'] .session-title")).to_have_text("Trip to Rome", timeout=T)
    expect(page.locator("#chat-title")).to_have_text("Trip to Rome")
    wait_idle(page)
    assert [s["body"] for s in sent] == [{"approved": True}]
    assert sent[0]["headers"].get("x-ui-stream-protocol") == (None if protocol == "v5" else protocol)
    tool = next(m for m in stored(chat_stack, sid) if m["role"] == "tool")
    assert tool["status"] == "complete" and json.loads(tool["content"]) == {"renamed": True, "title": "Trip to Rome"}
    assert answer_text(page).text_content() == stored(chat_stack, sid)[-1]["content"]


@pytest.mark.parametrize("protocol", ["v5", "v7"])
def test_deny_keeps_the_title_and_shows_the_denial(page: Page, chat_stack: ChatStack, protocol: str):
    sid, card = ask_to_rename(page, protocol)
    sent = approval_requests(page)
    card.get_by_label("Reason for denying (optional)").fill("Not now")
    card.get_by_role("button", name="Deny").click()
    expect(card.locator(".tool-status")).to_have_text("denied", timeout=T)
    expect(card.locator(".tool-output")).to_have_text("The user denied this tool call.")
    expect(answer_text(page)).to_contain_text("The tool rename_session returned", timeout=T)
    wait_idle(page)
    expect(card.get_by_role("button", name="Deny")).to_have_count(0)
    assert [s["body"] for s in sent] == [{"approved": False, "reason": "Not now"}]
    expect(page.locator(f".session[data-id='{sid}'] .session-title")).to_have_text("Rename This Chat To Trip")
    tool = next(m for m in stored(chat_stack, sid) if m["role"] == "tool")
    assert tool["status"] == "denied" and json.loads(tool["content"])["reason"] == "Not now"
    with chat_stack.client("me") as client:
        assert client.get(f"/sessions/{sid}").json()["title"] == "Rename This Chat To Trip"
    # Rebuilt from the stored history, with the reason.
    page.reload()
    card = page.locator(".msg.assistant").last.locator(".tool")
    expect(card.locator(".tool-status")).to_have_text("denied", timeout=T)
    expect(card.locator(".tool-output")).to_have_text("The user denied this tool call. Reason: Not now")
    expect(card.get_by_role("button", name="Approve")).to_have_count(0)


def test_approval_buttons_survive_a_reload_and_the_continuation_resumes(page: Page, chat_stack: ChatStack):
    sid, card = ask_to_rename(page, "v5")
    waiting = stored(chat_stack, sid)[-1]
    assert waiting["status"] == "awaiting_approval" and waiting["approval_id"].startswith("appr_")
    page.reload()
    card = page.locator(".msg.assistant").last.locator(".tool")
    expect(card.locator(".tool-status")).to_have_text("waiting for your approval", timeout=T)
    expect(card.locator(".tool-input")).to_contain_text('"title": "Trip to Rome"')
    sent = approval_requests(page)
    chat_stack.llm.token_delay = 0.3
    card.get_by_role("button", name="Approve").click()
    expect(answer_text(page)).to_contain_text("The tool", timeout=T)
    assert [(s["path"], s["body"]) for s in sent] == [
        (f"/chat/{sid}/approvals/{waiting['approval_id']}", {"approved": True})
    ]
    # Reloaded while the continuation streams: it is followed live in the bubble that asked.
    page.reload()
    expect(page.locator(".msg.assistant[data-streaming]")).to_have_count(1, timeout=T)
    card = page.locator(".msg.assistant").last.locator(".tool")
    expect(card.locator(".tool-name")).to_have_text("rename_session")
    expect(card.locator(".tool-input")).to_contain_text('"title": "Trip to Rome"')
    wait_idle(page)
    expect(page.locator(".msg.assistant")).to_have_count(1)
    expect(card.locator(".tool-status")).to_have_text("done")
    expect(page.locator("#chat-title")).to_have_text("Trip to Rome", timeout=T)
    assert answer_text(page).text_content() == stored(chat_stack, sid)[-1]["content"]


def test_a_new_message_answers_a_waiting_approval_with_no(page: Page, chat_stack: ChatStack):
    sid, _ = ask_to_rename(page, "v5")
    card = page.locator(".msg.assistant").first.locator(".tool")
    send(page, "never mind")
    expect(card.locator(".tool-status")).to_have_text("denied", timeout=T)
    expect(card.get_by_role("button", name="Approve")).to_have_count(0)
    expect(answer_text(page)).to_contain_text('You said: "never mind"', timeout=T)
    wait_idle(page)
    tool = next(m for m in stored(chat_stack, sid) if m["role"] == "tool")
    assert tool["status"] == "denied"
    page.reload()
    card = page.locator(".msg.assistant").first.locator(".tool")
    expect(card.locator(".tool-status")).to_have_text("denied", timeout=T)
    expect(card.get_by_role("button", name="Approve")).to_have_count(0)


def test_feedback_is_stored_and_shown_after_a_reload(page: Page, chat_stack: ChatStack):
    sid = new_chat(page)
    exchange(page, "first")
    exchange(page, "second")

    def buttons(index: int) -> tuple[Locator, Locator]:
        answer = page.locator(".msg.assistant").nth(index)
        return answer.get_by_role("button", name="Good answer"), answer.get_by_role("button", name="Bad answer")

    def ratings() -> list[object]:
        return [m["feedback"] and m["feedback"]["rating"] for m in stored(chat_stack, sid) if m["role"] == "assistant"]

    up, down = buttons(0)
    up.click()
    expect(up).to_have_attribute("aria-pressed", "true", timeout=T)
    assert ratings() == ["up", None]
    page.reload()
    up, down = buttons(0)
    expect(up).to_have_attribute("aria-pressed", "true", timeout=T)
    expect(down).to_have_attribute("aria-pressed", "false")
    expect(buttons(1)[0]).to_have_attribute("aria-pressed", "false")
    down.click()
    expect(down).to_have_attribute("aria-pressed", "true", timeout=T)
    expect(up).to_have_attribute("aria-pressed", "false")
    assert ratings() == ["down", None]
    page.reload()
    up, down = buttons(0)
    expect(down).to_have_attribute("aria-pressed", "true", timeout=T)
    down.click()  # pressing the current rating again removes it
    expect(down).to_have_attribute("aria-pressed", "false", timeout=T)
    assert ratings() == [None, None]
    page.reload()
    expect(buttons(0)[1]).to_have_attribute("aria-pressed", "false", timeout=T)
    expect(buttons(0)[0]).to_have_attribute("aria-pressed", "false")
