// DOM building. Every piece of untrusted text goes through textContent / Text nodes, never innerHTML.
//
// The views only draw; what a button does is app.js's, through `hooks` (set once with setHooks).

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

const hooks = {
  busy: () => false, // a reply is streaming: the message controls are disabled (the server would answer 409)
  editMessage: async (/* userView, text */) => {},
  regenerate: async (/* assistantView */) => {},
  showVersion: async (/* messageId */) => {},
  rate: async (/* assistantView, "up" | "down" */) => {},
  answerApproval: async (/* assistantView, toolCallId, approved, reason */) => {},
};

export function setHooks(given) {
  Object.assign(hooks, given);
}

const views = new WeakMap(); // message node -> its view

export function viewOf(node) {
  return views.get(node) ?? null;
}

// A thumb (up; turned down by CSS), drawn rather than an emoji: not every system has an emoji font. The markup is a
// constant, parsed once (the HTML parser puts <svg> in the SVG namespace); no data ever goes through innerHTML.
const THUMB = (() => {
  const template = document.createElement("template");
  template.innerHTML =
    '<svg class="icon" viewBox="0 0 16 16" aria-hidden="true">' +
    '<path d="M2 7h3v8H2zM5 7l3-5.5c1.2 0 2 .9 2 2L9.5 6h4c.9 0 1.6.8 1.4 1.7l-1.2 6.1c-.2.7-.8 1.2-1.5 1.2H5"/></svg>';
  return template.content.firstElementChild;
})();

function thumb(down) {
  const icon = THUMB.cloneNode(true);
  if (down) icon.classList.add("down");
  return icon;
}

// A control of a message (edit, regenerate, versions, feedback, approval): disabled while a reply streams.
function control(props, ...children) {
  return el("button", { type: "button", class: "control", disabled: hooks.busy(), ...props }, ...children);
}

export function setControlsDisabled(container, disabled) {
  for (const button of container.querySelectorAll("button.control")) button.disabled = disabled;
}

// "‹ 2 / 3 ›" for a message with versions (`versions`: their ids, oldest first; `id`: the shown one's id).
// The arrow past either end is a plain disabled button, never enabled with the other controls.
function versionNav(versions, id) {
  const index = versions?.indexOf(id) ?? -1;
  if (!versions || versions.length < 2 || index < 0) return null;
  const arrow = (label, glyph, target) =>
    target === undefined
      ? el("button", { type: "button", "aria-label": label, title: label, text: glyph, disabled: true })
      : control({ "aria-label": label, title: label, text: glyph, onclick: () => hooks.showVersion(target) });
  return el(
    "span",
    { class: "versions", role: "group", "aria-label": "Versions" },
    arrow("Previous version", "‹", versions[index - 1]),
    el("span", { class: "version-count", text: `${index + 1} / ${versions.length}` }),
    arrow("Next version", "›", versions[index + 1]),
  );
}

// One user message. `clientId` is the id the page sent it with (stored as client_message_id): an edit is a POST
// of the same id with the new text. A message without one (sent with curl) cannot be edited from here.
export class UserView {
  constructor(text, { clientId = null, id = null, versions = null } = {}) {
    this.text = text;
    this.clientId = clientId;
    this.textNode = el("div", { class: "text", text });
    this.footer = el("div", { class: "msg-actions" });
    this.node = el("article", { class: "msg user", "aria-label": "You" }, this.textNode, this.footer);
    this.form = null;
    views.set(this.node, this);
    const nav = versionNav(versions, id);
    if (nav) this.footer.append(nav);
    if (clientId) {
      this.footer.append(control({ class: "control edit", text: "Edit", onclick: () => this.openEditor() }));
    }
    this.footer.hidden = !this.footer.childElementCount;
  }

  setText(text) {
    this.text = text;
    this.textNode.textContent = text;
  }

  openEditor() {
    if (this.form) return;
    const input = el("textarea", { class: "edit-input", "aria-label": "Edit message", rows: 3 });
    input.value = this.text;
    const save = el("button", { type: "submit", class: "primary control", text: "Save" });
    this.form = el(
      "form",
      { class: "edit-form" },
      input,
      el("div", { class: "row" }, save, el("button", { type: "button", text: "Cancel", onclick: () => this.closeEditor() })),
    );
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = input.value;
      if (!text.trim()) return;
      if (text === this.text) {
        this.closeEditor();
        return;
      }
      hooks.editMessage(this, text);
    });
    this.form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.closeEditor();
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.form.requestSubmit();
      }
    });
    this.textNode.hidden = this.footer.hidden = true;
    this.node.insertBefore(this.form, this.footer);
    this.node.classList.add("editing");
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }

  closeEditor() {
    this.form?.remove();
    this.form = null;
    this.node.classList.remove("editing");
    this.textNode.hidden = false;
    this.footer.hidden = !this.footer.childElementCount;
  }
}

export function userBubble(text, options) {
  return new UserView(text, options).node;
}

function pretty(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

function parseJson(text) {
  if (typeof text !== "string") return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

const STATUS_TEXT = {
  input: "preparing…",
  running: "running…",
  done: "done",
  error: "error",
  approval: "waiting for your approval",
  denied: "denied",
};
export const DENIED_TEXT = "The user denied this tool call.";

// One assistant bubble: text parts keyed by their stream id, tool cards keyed by toolCallId, in arrival order;
// under it the answer's controls once its id (the turn id: `start.messageId`, the stored `turn_id`) is known.
export class AssistantView {
  constructor() {
    this.body = el("div", { class: "body" });
    this.footer = el("div", { class: "msg-actions", hidden: true });
    this.node = el("article", { class: "msg assistant", "aria-label": "Assistant" }, this.body, this.footer);
    this.texts = new Map();
    this.tools = new Map();
    this.anonymous = 0;
    this.answerId = null;
    this.feedback = null; // "up" | "down" | null
    this.versions = null;
    this.messageId = null; // the stored id of the answer's first message (what `versions` lists)
    views.set(this.node, this);
  }

  // The answer's id (its turn id); the first one wins (a continuation of a long-running tool streams under
  // another turn id into the same bubble).
  setAnswer(answerId, { versions = null, messageId = null, feedback = null } = {}) {
    if (!answerId || this.answerId) return;
    this.answerId = answerId;
    this.versions = versions;
    this.messageId = messageId;
    this.feedback = feedback;
    this.renderFooter();
  }

  renderFooter() {
    const rating = (value, label) =>
      control(
        {
          class: `control rate rate-${value}`,
          "aria-label": label,
          title: label,
          "aria-pressed": this.feedback === value ? "true" : "false",
          onclick: () => hooks.rate(this, value),
        },
        thumb(value === "down"),
      );
    this.footer.replaceChildren(
      ...[
        versionNav(this.versions, this.messageId),
        control({
          class: "control regenerate",
          "aria-label": "Regenerate answer",
          title: "Regenerate answer",
          text: "↻",
          onclick: () => hooks.regenerate(this),
        }),
        rating("up", "Good answer"),
        rating("down", "Bad answer"),
      ].filter(Boolean),
    );
    this.footer.hidden = false;
  }

  setFeedback(rating) {
    this.feedback = rating;
    for (const button of this.footer.querySelectorAll(".rate")) {
      button.setAttribute("aria-pressed", button.classList.contains(`rate-${rating}`) ? "true" : "false");
    }
  }

  textNode(id) {
    let text = this.texts.get(id);
    if (!text) {
      text = document.createTextNode("");
      this.body.append(el("div", { class: "text" }, text));
      this.texts.set(id, text);
    }
    return text;
  }

  appendText(id, delta) {
    this.textNode(id).appendData(delta);
  }

  addText(content) {
    this.appendText(`history-${this.anonymous++}`, content);
  }

  tool(id, name) {
    let card = this.tools.get(id);
    if (!card) {
      const nameNode = el("span", { class: "tool-name", text: name || "tool" });
      const status = el("span", { class: "tool-status" });
      const input = el("pre", { class: "tool-input" });
      const output = el("pre", { class: "tool-output" });
      const outputRow = el("div", { class: "tool-io", hidden: true }, el("span", { class: "label", text: "Output" }), output);
      const node = el(
        "div",
        { class: "tool", "data-tool-call-id": id },
        el("div", { class: "tool-head" }, el("span", { class: "tool-icon", "aria-hidden": "true", text: "⚙" }), nameNode, status),
        el("div", { class: "tool-io" }, el("span", { class: "label", text: "Input" }), input),
        outputRow,
      );
      card = { node, nameNode, status, input, output, outputRow, approval: null };
      this.body.append(node);
      this.tools.set(id, card);
      this.setToolState(id, "input");
    } else if (name) {
      card.nameNode.textContent = name;
    }
    return card;
  }

  setToolState(id, state, label) {
    const card = this.tool(id);
    card.node.dataset.state = state;
    card.status.textContent = label || STATUS_TEXT[state] || state;
  }

  toolInput(id, name, input) {
    this.tool(id, name).input.textContent = pretty(input);
    if (this.tool(id).node.dataset.state === "input") this.setToolState(id, "running");
  }

  toolOutput(id, output) {
    const card = this.tool(id);
    this.closeApproval(id);
    card.output.textContent = pretty(output);
    card.outputRow.hidden = false;
    this.setToolState(id, "done");
  }

  toolError(id, errorText) {
    const card = this.tool(id);
    this.closeApproval(id);
    card.output.textContent = errorText;
    card.outputRow.hidden = false;
    // A denial (v5 sends it as the approval part, then this error) stays shown as denied.
    if (card.node.dataset.state !== "denied") this.setToolState(id, "error");
  }

  // The call waits for the user's yes or no: Approve / Deny (with an optional reason) on its card.
  askApproval(id, approvalId, name) {
    const card = this.tool(id, name);
    this.closeApproval(id);
    this.setToolState(id, "approval");
    const reason = el("input", {
      class: "approval-reason",
      "aria-label": "Reason for denying (optional)",
      placeholder: "Reason (optional)",
      maxlength: 2000,
      autocomplete: "off",
    });
    const answer = (approved) => () => hooks.answerApproval(this, id, approved, approved ? null : reason.value.trim() || null);
    card.approval = el(
      "div",
      { class: "approval", role: "group", "aria-label": "Approve this tool call?", "data-approval-id": approvalId },
      el("span", { class: "approval-question", text: `Run ${name || card.nameNode.textContent}? It asks for your approval first.` }),
      control({ class: "control primary approve", text: "Approve", onclick: answer(true) }),
      reason,
      control({ class: "control danger deny", text: "Deny", onclick: answer(false) }),
    );
    card.approvalId = approvalId;
    card.node.append(card.approval);
  }

  approvalOf(id) {
    return this.tools.get(id)?.approvalId ?? null;
  }

  closeApproval(id) {
    const card = this.tools.get(id);
    card?.approval?.remove();
    if (card) card.approval = null;
  }

  denied(id, text = DENIED_TEXT) {
    const card = this.tool(id);
    this.closeApproval(id);
    card.output.textContent = text;
    card.outputRow.hidden = false;
    this.setToolState(id, "denied");
  }

  // Waiting approvals answered by sending a new message instead (the server denies them first).
  supersedeApprovals() {
    for (const [id, card] of this.tools) {
      if (card.approval) this.denied(id, "Not answered: a new message was sent instead.");
    }
  }

  error(text) {
    this.body.append(el("p", { class: "error-text", text }));
  }

  marker(text) {
    this.body.append(el("span", { class: "marker", text }));
  }

  get hasPendingTools() {
    return [...this.tools.values()].some((card) => card.node.dataset.state === "running");
  }
}

function deniedText(content) {
  const parsed = parseJson(content ?? "");
  const reason = parsed && typeof parsed === "object" ? parsed.reason : null;
  return typeof reason === "string" && reason && reason !== DENIED_TEXT ? `${DENIED_TEXT} Reason: ${reason}` : DENIED_TEXT;
}

// Render stored messages (the active branch): a user message is a user bubble; the assistant/tool messages after
// it form one bubble, whose answer id is its first message's turn id (and whose versions are that message's).
// Returns the last assistant view (or null) and the tool call ids whose tool message is still pending.
export function renderHistory(container, messages) {
  let current = null;
  const pending = [];
  for (const message of messages) {
    if (message.role === "user") {
      const view = new UserView(message.content ?? "", {
        clientId: message.client_message_id,
        id: message.id,
        versions: message.versions,
      });
      container.append(view.node);
      current = null;
      continue;
    }
    if (message.role !== "assistant" && message.role !== "tool") continue;
    if (!current) {
      current = new AssistantView();
      container.append(current.node);
      const rated = messages.find((m) => m.role === "assistant" && m.turn_id === message.turn_id && m.feedback);
      current.setAnswer(message.turn_id, {
        versions: message.versions,
        messageId: message.id,
        feedback: rated?.feedback?.rating ?? null,
      });
    }
    if (message.role === "assistant") {
      if (message.content) current.addText(message.content);
      for (const call of message.tool_calls ?? []) {
        current.toolInput(call.id, call.function?.name, parseJson(call.function?.arguments ?? "{}"));
      }
      if (message.status === "partial") current.marker("(stopped/incomplete)");
    } else if (message.status === "pending") {
      current.tool(message.tool_call_id, message.name);
      current.setToolState(message.tool_call_id, "running");
      pending.push(message.tool_call_id);
    } else if (message.status === "awaiting_approval") {
      current.askApproval(message.tool_call_id, message.approval_id, message.name);
    } else if (message.status === "denied") {
      current.tool(message.tool_call_id, message.name);
      current.denied(message.tool_call_id, deniedText(message.content));
    } else if (message.status === "error") {
      const content = parseJson(message.content ?? "");
      const text = content && typeof content === "object" && "error" in content ? content.error : content;
      current.tool(message.tool_call_id, message.name);
      current.toolError(message.tool_call_id, pretty(text));
    } else {
      current.tool(message.tool_call_id, message.name);
      current.toolOutput(message.tool_call_id, parseJson(message.content ?? ""));
    }
  }
  return { last: current, pending };
}
