// The local chat page: sessions API + chat API (AI SDK UI message stream), no framework, no build step.
//
// Protocol level: the page reads the streams at level v5 (the server's default, what every `ai` client accepts): a
// tool call that needs the user's approval arrives as a `data-approval` part {approvalId, toolCallId, toolName,
// input, state: "requested" | "denied"}, a denial as that part with state "denied" followed by `tool-output-error`.
// `?protocol=v6` or `?protocol=v7` in the page's URL sends `x-ui-stream-protocol` with every stream request instead,
// and the same cards are driven by `tool-approval-request` {approvalId, toolCallId} and `tool-output-denied`. Either
// way an approval is answered with POST /chat/{id}/approvals/{approvalId}, whose answer streams the continuation
// of the same assistant message (same `start.messageId`), rendered into the bubble that asked.
import { readChunks } from "./sse.js";
import { AssistantView, UserView, el, renderHistory, setControlsDisabled, setHooks, viewOf } from "./render.js";

const $ = (id) => document.getElementById(id);
const ui = {
  userForm: $("user-form"), userId: $("user-id"), newChat: $("new-chat"),
  list: $("session-list"), noSessions: $("no-sessions"),
  title: $("chat-title"), actions: $("chat-actions"), rename: $("rename"), remove: $("delete"),
  renameForm: $("rename-form"), renameInput: $("rename-input"), renameCancel: $("rename-cancel"),
  banner: $("banner"), bannerText: $("banner-text"), bannerClose: $("banner-close"),
  messages: $("messages"), status: $("status"),
  composer: $("composer"), input: $("input"), send: $("send"), stop: $("stop"),
};

const POLL_MS = 1500;
const FINISHED_OPERATION = new Set(["saved", "done", "cancelled", "failed"]); // any other status: still running
const HISTORY_PAGES = 10; // at most 2,000 messages are shown
const PROTOCOL = ["v5", "v6", "v7"].find((level) => level === new URLSearchParams(location.search).get("protocol"));
const STREAM_HEADERS = PROTOCOL ? { "x-ui-stream-protocol": PROTOCOL } : {};

const state = {
  user: localStorage.getItem("chat.user") || "me",
  token: null,
  sessions: [],
  current: null, // the open session id
  epoch: 0, // bumped whenever the open session changes: late answers for an older one are dropped
  turn: null, // the stream being read: {sessionId, controller, view, stopping}
  lastView: null, // the last assistant bubble of the open session
  operations: new Map(), // running long-running tools of the open session: tool_call_id -> data
  pollTimer: 0,
  polls: 0,
  loading: null, // the history load of the open session, while it runs
  streamedTitles: new Map(), // session id -> a generated title streamed before storage showed it
  deleted: new Set(), // sessions deleted here: a read sent before the delete must not bring them back
};

// ------------------------------------------------------------------------------------------------ HTTP

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const isAbort = (err) => err?.name === "AbortError";

async function httpError(response) {
  let message = response.statusText || "request failed";
  try {
    message = (await response.json())?.error?.message || message;
  } catch {
    // not JSON: keep the status text
  }
  return new HttpError(response.status, `${response.status}: ${message}`);
}

async function fetchToken(user) {
  const response = await fetch("/dev/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user_id: user }),
  });
  if (!response.ok) throw await httpError(response);
  return (await response.json()).token;
}

// JSON in and out; `raw` returns the Response (for streams). A 401 (the stack restarted with a new secret)
// fetches a fresh dev token once and retries.
async function api(method, path, body, { raw = false, signal, headers = {} } = {}) {
  const call = () =>
    fetch(path, {
      method,
      signal,
      headers: {
        ...headers,
        authorization: `Bearer ${state.token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  let response = await call();
  if (response.status === 401) {
    state.token = await fetchToken(state.user);
    response = await call();
  }
  if (!response.ok) throw await httpError(response);
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

// ------------------------------------------------------------------------------------------------ UI helpers

function showError(err) {
  if (isAbort(err)) return;
  ui.bannerText.textContent = err?.message || String(err);
  ui.banner.hidden = false;
}

function clearError() {
  ui.banner.hidden = true;
  ui.bannerText.textContent = "";
}

function announce(text) {
  ui.status.textContent = text;
}

function scrollToEnd(force = false) {
  const box = ui.messages;
  if (force || box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
}

function setStreaming(on) {
  ui.send.disabled = on;
  ui.stop.hidden = !on;
  ui.stop.disabled = false;
  ui.messages.setAttribute("aria-busy", on ? "true" : "false");
  setControlsDisabled(ui.messages, on);
}

function sessionTitle(session) {
  return session?.title || "New chat";
}

function renderSessions() {
  ui.list.replaceChildren(
    ...state.sessions.map((session) => {
      const when = new Date(session.updated_at);
      return el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: "session",
            "data-id": session.id,
            "aria-current": session.id === state.current ? "true" : null,
            onclick: () => openSession(session.id),
          },
          el("span", { class: "session-title", text: sessionTitle(session) }),
          el("time", {
            class: "session-time",
            datetime: session.updated_at,
            text: when.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }),
          }),
        ),
      );
    }),
  );
  ui.noSessions.hidden = state.sessions.length > 0;
  renderHeader();
}

function renderHeader() {
  const session = state.sessions.find((s) => s.id === state.current);
  ui.title.textContent = state.current ? sessionTitle(session) : "No chat open";
  ui.rename.disabled = ui.remove.disabled = !state.current;
}

// Reads overlap (a list or session read sent before a rename may answer after it): of two copies of a session
// the one with the higher stored version wins. A title streamed by a first turn is shown over a copy without one
// (read before the title was stored) until a read shows a stored title: that one, or the user's rename.
function newest(held, read) {
  const copy = held && held.version > read.version ? held : read;
  const streamed = state.streamedTitles.get(copy.id);
  if (streamed === undefined) return copy;
  if (copy.title) {
    state.streamedTitles.delete(copy.id);
    return copy;
  }
  return { ...copy, title: streamed };
}

function upsertSession(session) {
  if (state.deleted.has(session.id)) return;
  const index = state.sessions.findIndex((s) => s.id === session.id);
  if (index >= 0) state.sessions[index] = newest(state.sessions[index], session);
  else state.sessions.unshift(newest(null, session));
  renderSessions();
}

function setTitle(sessionId, title) {
  const session = state.sessions.find((s) => s.id === sessionId);
  // Only over no title: a user's rename during the first turn wins, as it does in storage.
  if (session && typeof title === "string" && title && !session.title) {
    session.title = title;
    state.streamedTitles.set(sessionId, title); // a deleted session is not in the list: never here
    renderSessions();
  }
}

function showEmpty(text) {
  ui.messages.replaceChildren(el("p", { class: "empty muted", text }));
}

function hashSession() {
  return new URLSearchParams(location.hash.slice(1)).get("s");
}

function setHash(sessionId) {
  const url = sessionId ? `#s=${encodeURIComponent(sessionId)}` : location.pathname + location.search;
  history.replaceState(null, "", url);
}

function randomId(prefix) {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ------------------------------------------------------------------------------------------------ sessions

async function loadSessions() {
  const { sessions } = await api("GET", "/sessions?limit=50");
  const held = new Map(state.sessions.map((s) => [s.id, s]));
  state.sessions = sessions.filter((s) => !state.deleted.has(s.id)).map((s) => newest(held.get(s.id), s));
  renderSessions();
}

// Stop reading the current stream and polling (the turn itself goes on on the server).
function detach() {
  state.epoch += 1;
  state.turn?.controller.abort();
  state.turn = null;
  state.lastView = null;
  state.operations.clear();
  clearTimeout(state.pollTimer);
  setStreaming(false);
}

async function switchUser(user) {
  detach();
  state.token = await fetchToken(user);
  state.user = user;
  localStorage.setItem("chat.user", user);
  ui.userId.value = user;
  state.current = null;
  state.sessions = [];
  setHash(null);
  showEmpty("Start a new chat or pick one on the left.");
  await loadSessions();
}

async function createSession() {
  const session = await api("POST", "/sessions", {});
  upsertSession(session);
  await openSession(session.id);
  return session.id;
}

async function loadMessages(sessionId) {
  let messages = [];
  let cursor = null;
  for (let page = 0; page < HISTORY_PAGES; page++) {
    const query = `limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const answer = await api("GET", `/sessions/${encodeURIComponent(sessionId)}/messages?${query}`);
    messages = messages.concat(answer.messages);
    cursor = answer.next_cursor;
    if (!cursor) break;
  }
  return messages;
}

function renderMessages(messages) {
  ui.messages.replaceChildren();
  const { last, pending } = renderHistory(ui.messages, messages);
  state.lastView = last && ui.messages.lastElementChild === last.node ? last : null;
  state.operations.clear();
  for (const id of pending) state.operations.set(id, { tool_call_id: id, status: "running" });
  if (!messages.length) showEmpty("Send a message to start.");
  scrollToEnd(true);
}

// Opening a session reads its history (and resumes an active turn). A message sent meanwhile waits for that,
// so the history render cannot wipe the new bubble.
async function openSession(sessionId) {
  const loading = loadSession(sessionId);
  state.loading = loading;
  try {
    await loading;
  } finally {
    if (state.loading === loading) state.loading = null;
  }
}

async function loadSession(sessionId) {
  clearError();
  detach();
  const epoch = state.epoch;
  state.current = sessionId;
  setHash(sessionId);
  renderSessions();
  showEmpty("Loading…");
  const id = encodeURIComponent(sessionId);
  const controller = new AbortController();
  try {
    // Ask for an active turn first: if there is none, the history read afterwards holds every finished turn.
    const resume = await api("GET", `/chat/${id}/stream`, undefined, {
      raw: true,
      signal: controller.signal,
      headers: STREAM_HEADERS,
    });
    const [session, messages] = await Promise.all([api("GET", `/sessions/${id}`), loadMessages(sessionId)]);
    if (epoch !== state.epoch) {
      controller.abort();
      return;
    }
    upsertSession(session);
    if (resume.status !== 200) {
      renderMessages(messages);
      schedulePoll();
      return;
    }
    // A turn is active: its replay starts from the first chunk, so drop what history holds of it and render
    // the stream instead; unless history ends with a pending long-running tool or an answered approval (the
    // stream is their continuation, which goes on in the same bubble).
    const lastUser = messages.findLastIndex((m) => m.role === "user");
    const trailing = messages.slice(lastUser + 1);
    const continuation = trailing.some((m) => m.role === "tool" && (m.status === "pending" || m.approval_id));
    renderMessages(continuation ? messages : messages.slice(0, lastUser + 1));
    await streamTurn(sessionId, resume, controller, { continuation });
  } catch (err) {
    if (epoch !== state.epoch) return;
    showError(err);
    if (err instanceof HttpError && err.status === 404) {
      state.current = null;
      setHash(null);
      showEmpty("Start a new chat or pick one on the left.");
      loadSessions().catch(showError);
    }
  }
}

async function renameSession(title) {
  const session = await api("PATCH", `/sessions/${encodeURIComponent(state.current)}`, { title });
  state.streamedTitles.delete(session.id); // the user's title wins
  upsertSession(session);
}

async function deleteSession() {
  const sessionId = state.current;
  const session = state.sessions.find((s) => s.id === sessionId);
  if (!confirm(`Delete “${sessionTitle(session)}”? This cannot be undone.`)) return;
  detach();
  await api("DELETE", `/sessions/${encodeURIComponent(sessionId)}`);
  state.deleted.add(sessionId);
  state.streamedTitles.delete(sessionId);
  state.sessions = state.sessions.filter((s) => s.id !== sessionId);
  state.current = null;
  setHash(null);
  renderSessions();
  showEmpty("Chat deleted. Start a new chat or pick one on the left.");
  ui.newChat.focus();
}

// ------------------------------------------------------------------------------------------------ turns

function applyChunk(sessionId, view, chunk) {
  switch (chunk.type) {
    case "start":
      view.setAnswer(chunk.messageId);
      break;
    case "text-start":
      view.textNode(chunk.id);
      break;
    case "text-delta":
      view.appendText(chunk.id, chunk.delta);
      break;
    case "tool-input-start":
      view.tool(chunk.toolCallId, chunk.toolName);
      break;
    case "tool-input-available":
      view.toolInput(chunk.toolCallId, chunk.toolName, chunk.input);
      break;
    case "tool-output-available":
      view.toolOutput(chunk.toolCallId, chunk.output);
      state.operations.delete(chunk.toolCallId);
      break;
    case "tool-output-error":
      view.toolError(chunk.toolCallId, chunk.errorText);
      state.operations.delete(chunk.toolCallId);
      break;
    case "data-approval": {
      // v5: the approval request, and later its denial (then a tool-output-error, which stays shown as denied)
      const data = chunk.data ?? {};
      if (!data.toolCallId) break;
      if (data.state === "requested") view.askApproval(data.toolCallId, data.approvalId, data.toolName);
      else if (data.state === "denied") view.denied(data.toolCallId);
      break;
    }
    case "tool-approval-request": // v6/v7; an automatic approval (v7) needs no answer
      if (!chunk.isAutomatic) view.askApproval(chunk.toolCallId, chunk.approvalId);
      break;
    case "tool-output-denied": // v6/v7
      view.denied(chunk.toolCallId);
      break;
    case "data-title":
      setTitle(sessionId, chunk.data?.title);
      break;
    case "data-operation": {
      const data = chunk.data ?? {};
      if (!data.tool_call_id) break;
      view.tool(data.tool_call_id, data.tool_name);
      if (!FINISHED_OPERATION.has(data.status)) {
        view.setToolState(data.tool_call_id, "running");
        state.operations.set(data.tool_call_id, data);
      } else {
        const failed = data.status === "failed" || data.status === "cancelled";
        view.setToolState(data.tool_call_id, failed ? "error" : "done", data.status);
        state.operations.delete(data.tool_call_id);
      }
      break;
    }
    case "error":
      view.error(chunk.errorText || "The reply failed.");
      break;
    default:
      break; // start, start-step, finish-step, tool-input-delta, finish, other data-* parts
  }
}

// Read one turn's stream into a bubble (a new one, or the last one for a continuation). `refresh`: read the
// history again when it ends (a regenerated answer or an edit made versions, which the stream does not carry).
async function streamTurn(sessionId, response, controller, { view = null, continuation = false, refresh = false } = {}) {
  view ??= continuation && state.lastView ? state.lastView : new AssistantView();
  if (!view.node.isConnected) {
    ui.messages.querySelector(".empty")?.remove();
    ui.messages.append(view.node);
  }
  state.lastView = view;
  const turn = { sessionId, controller, view, stopping: false };
  state.turn = turn;
  setStreaming(true);
  view.node.dataset.streaming = "true";
  announce("The assistant is replying…");
  scrollToEnd(true);
  let failed = null;
  try {
    for await (const chunk of readChunks(response.body)) {
      if (controller.signal.aborted) break;
      applyChunk(sessionId, view, chunk);
      scrollToEnd();
    }
  } catch (err) {
    failed = err;
  } finally {
    delete view.node.dataset.streaming;
  }
  if (state.turn !== turn) return; // detached: another session was opened, or the user switched
  state.turn = null;
  setStreaming(false);
  announce("The reply is complete.");
  if (failed && !isAbort(failed)) {
    showError(new Error(`The connection to the reply was lost (${failed.message}); reopening the chat.`));
    await openSession(sessionId);
    return;
  }
  if (turn.stopping) view.marker("(stopped)");
  loadSessions().catch(showError);
  if (continuation || refresh) await refreshHistory();
  else schedulePoll();
}

async function sendMessage(text) {
  clearError();
  if (!state.current) await createSession();
  if (state.loading) await state.loading;
  const sessionId = state.current;
  const epoch = state.epoch;
  ui.messages.querySelector(".empty")?.remove();
  const clientId = randomId("m_"); // stored as the message's client_message_id: an edit sends it again
  const bubble = new UserView(text, { clientId }).node;
  ui.messages.append(bubble);
  scrollToEnd(true);
  const controller = new AbortController();
  const view = new AssistantView();
  state.turn = { sessionId, controller, view, stopping: false };
  setStreaming(true);
  clearTimeout(state.pollTimer);
  const body = {
    id: sessionId,
    messages: [{ id: clientId, role: "user", parts: [{ type: "text", text }] }],
    trigger: "submit-message",
    messageId: null,
  };
  const waiting = state.lastView;
  let response;
  try {
    response = await api("POST", "/chat", body, { raw: true, signal: controller.signal, headers: STREAM_HEADERS });
  } catch (err) {
    if (epoch !== state.epoch) return;
    state.turn = null;
    setStreaming(false);
    bubble.remove();
    if (!ui.input.value) ui.input.value = text;
    showError(err);
    return;
  }
  if (epoch !== state.epoch) return;
  waiting?.supersedeApprovals(); // the server denied approvals still waiting before it took the new message
  await streamTurn(sessionId, response, controller, { view });
}

// ------------------------------------------------------------------------------------------------ message controls

// A POST whose answer streams in place of everything from `anchor` on (a regenerated answer, an edited message's
// new answer). Nothing is removed before the server accepted it; `accepted` runs then.
async function replaceWithTurn(path, body, accepted) {
  if (state.turn || !state.current) return;
  clearError();
  const sessionId = state.current;
  const epoch = state.epoch;
  const controller = new AbortController();
  const view = new AssistantView();
  state.turn = { sessionId, controller, view, stopping: false };
  setStreaming(true);
  clearTimeout(state.pollTimer);
  let response;
  try {
    response = await api("POST", path, body, { raw: true, signal: controller.signal, headers: STREAM_HEADERS });
  } catch (err) {
    if (epoch !== state.epoch) return;
    state.turn = null;
    setStreaming(false);
    showError(err);
    return;
  }
  if (epoch !== state.epoch) return;
  accepted();
  await streamTurn(sessionId, response, controller, { view, refresh: true });
}

function removeFrom(node, { keep = false } = {}) {
  while (node.nextSibling) node.nextSibling.remove();
  if (!keep) node.remove();
}

function previousUser(node) {
  for (let at = node.previousElementSibling; at; at = at.previousElementSibling) {
    const view = viewOf(at);
    if (view instanceof UserView) return view;
  }
  return null;
}

function uiMessage(userView, text = userView.text) {
  return { id: userView.clientId ?? randomId("m_"), role: "user", parts: [{ type: "text", text }] };
}

// Regenerate: a new answer to the same message, streamed in place of this one (which stays as a version).
async function regenerate(view) {
  const user = previousUser(view.node);
  if (!view.answerId || !user) return;
  const body = {
    id: state.current,
    messages: [uiMessage(user)],
    trigger: "regenerate-message",
    messageId: view.answerId,
  };
  await replaceWithTurn("/chat", body, () => removeFrom(view.node));
}

// Edit: the same client message id with new text; the conversation after it is replaced by the new answer (the
// old message and what followed stay reachable as versions).
async function editMessage(userView, text) {
  if (!userView.clientId) return;
  const body = {
    id: state.current,
    messages: [uiMessage(userView, text)],
    trigger: "submit-message",
    messageId: userView.clientId,
  };
  await replaceWithTurn("/chat", body, () => {
    userView.setText(text);
    userView.closeEditor();
    removeFrom(userView.node, { keep: true });
  });
}

// The version arrows: make that version (and the newest branch under it) active, then show the branch.
async function showVersion(messageId) {
  if (state.turn || !state.current) return;
  clearError();
  const epoch = state.epoch;
  setControlsDisabled(ui.messages, true);
  try {
    await api("PUT", `/sessions/${encodeURIComponent(state.current)}/branch`, { message_id: messageId });
  } catch (err) {
    setControlsDisabled(ui.messages, Boolean(state.turn));
    showError(err);
    return;
  }
  if (epoch !== state.epoch) return;
  await refreshHistory();
  setControlsDisabled(ui.messages, Boolean(state.turn)); // also when the history could not be read
}

// 👍 / 👎: one rating per answer; pressing the current one again removes it.
async function rate(view, rating) {
  if (!view.answerId || !state.current) return;
  clearError();
  const path = `/sessions/${encodeURIComponent(state.current)}/messages/${encodeURIComponent(view.answerId)}/feedback`;
  const next = view.feedback === rating ? null : rating;
  try {
    if (next) {
      await api("PUT", path, { rating: next });
    } else {
      await api("DELETE", path).catch((err) => {
        if (!(err instanceof HttpError && err.status === 404)) throw err; // none stored: removed already
      });
    }
  } catch (err) {
    showError(err);
    return;
  }
  view.setFeedback(next);
  announce(next ? `Rated ${next === "up" ? "good" : "bad"}.` : "Rating removed.");
}

// Approve / Deny on a tool card: the answer's stream continues the same assistant message, in the same bubble.
async function answerApproval(view, toolCallId, approved, reason) {
  const approvalId = view.approvalOf(toolCallId);
  if (state.turn || !state.current || !approvalId) return;
  clearError();
  const sessionId = state.current;
  const epoch = state.epoch;
  const controller = new AbortController();
  state.turn = { sessionId, controller, view, stopping: false };
  setStreaming(true);
  clearTimeout(state.pollTimer);
  const path = `/chat/${encodeURIComponent(sessionId)}/approvals/${encodeURIComponent(approvalId)}`;
  let response;
  try {
    response = await api("POST", path, reason ? { approved, reason } : { approved }, {
      raw: true,
      signal: controller.signal,
      headers: STREAM_HEADERS,
    });
  } catch (err) {
    if (epoch !== state.epoch) return;
    state.turn = null;
    setStreaming(false);
    showError(err);
    // Answered elsewhere, expired or gone: show what is stored now.
    if (err instanceof HttpError && (err.status === 404 || err.status === 409)) await refreshHistory();
    return;
  }
  if (epoch !== state.epoch) return;
  view.closeApproval(toolCallId);
  await streamTurn(sessionId, response, controller, { view });
}

setHooks({ busy: () => Boolean(state.turn), editMessage, regenerate, showVersion, rate, answerApproval });

async function stopTurn() {
  const turn = state.turn;
  if (!turn) return;
  turn.stopping = true;
  ui.stop.disabled = true;
  try {
    await api("POST", `/chat/${encodeURIComponent(turn.sessionId)}/stop`);
  } catch (err) {
    showError(err);
  }
}

// ------------------------------------------------------------------------------------------------ long-running tools

// While a long-running tool of the open session runs, look for its continuation (a new active turn).
function schedulePoll() {
  clearTimeout(state.pollTimer);
  if (!state.operations.size || state.turn || !state.current) return;
  const epoch = state.epoch;
  state.pollTimer = setTimeout(() => poll(state.current, epoch), POLL_MS);
}

async function poll(sessionId, epoch) {
  if (epoch !== state.epoch || state.turn) return;
  const controller = new AbortController();
  try {
    const response = await api("GET", `/chat/${encodeURIComponent(sessionId)}/stream`, undefined, {
      raw: true,
      signal: controller.signal,
      headers: STREAM_HEADERS,
    });
    if (epoch !== state.epoch || state.turn) {
      controller.abort();
      return;
    }
    if (response.status === 200) {
      await streamTurn(sessionId, response, controller, { continuation: true });
      return;
    }
    // A continuation may have come and gone between two polls: now and then, look at the stored history.
    state.polls += 1;
    if (state.polls % 4 === 0) {
      await refreshHistory();
      return;
    }
  } catch (err) {
    if (epoch !== state.epoch) return;
    showError(err);
  }
  schedulePoll();
}

async function refreshHistory() {
  const epoch = state.epoch;
  const messages = await loadMessages(state.current).catch((err) => {
    showError(err);
    return null;
  });
  if (messages === null || epoch !== state.epoch || state.turn) return;
  renderMessages(messages);
  schedulePoll();
}

// ------------------------------------------------------------------------------------------------ wiring

ui.userForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const user = ui.userId.value.trim();
  if (!user) return;
  clearError();
  switchUser(user).catch(showError);
});

ui.newChat.addEventListener("click", () => {
  clearError();
  createSession()
    .then(() => ui.input.focus())
    .catch(showError);
});

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.input.value;
  if (!text.trim() || state.turn) return;
  ui.input.value = "";
  sendMessage(text).catch(showError);
});

ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.stop.addEventListener("click", () => stopTurn());

ui.rename.addEventListener("click", () => {
  const session = state.sessions.find((s) => s.id === state.current);
  ui.renameInput.value = session?.title ?? "";
  ui.title.hidden = ui.actions.hidden = true;
  ui.renameForm.hidden = false;
  ui.renameInput.focus();
  ui.renameInput.select();
});

function closeRename() {
  ui.renameForm.hidden = true;
  ui.title.hidden = ui.actions.hidden = false;
  ui.rename.focus();
}

ui.renameForm.addEventListener("submit", (event) => {
  event.preventDefault();
  clearError();
  renameSession(ui.renameInput.value.trim())
    .then(closeRename)
    .catch(showError);
});
ui.renameCancel.addEventListener("click", closeRename);
ui.renameForm.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeRename();
});

ui.remove.addEventListener("click", () => {
  clearError();
  deleteSession().catch(showError);
});

ui.bannerClose.addEventListener("click", clearError);

window.addEventListener("hashchange", () => {
  const sessionId = hashSession();
  if (sessionId && sessionId !== state.current) openSession(sessionId);
});

async function start() {
  ui.userId.value = state.user;
  const reopen = hashSession();
  await switchUser(state.user);
  if (reopen) await openSession(reopen);
}

start().catch(showError);
