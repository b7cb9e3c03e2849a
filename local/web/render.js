// DOM building. Every piece of untrusted text goes through textContent / Text nodes, never innerHTML.

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

export function userBubble(text) {
  return el("article", { class: "msg user", "aria-label": "You" }, el("div", { class: "text", text }));
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

const STATUS_TEXT = { input: "preparing…", running: "running…", done: "done", error: "error" };

// One assistant bubble: text parts keyed by their stream id, tool cards keyed by toolCallId, in arrival order.
export class AssistantView {
  constructor() {
    this.body = el("div", { class: "body" });
    this.node = el("article", { class: "msg assistant", "aria-label": "Assistant" }, this.body);
    this.texts = new Map();
    this.tools = new Map();
    this.anonymous = 0;
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
      card = { node, nameNode, status, input, output, outputRow };
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
    card.output.textContent = pretty(output);
    card.outputRow.hidden = false;
    this.setToolState(id, "done");
  }

  toolError(id, errorText) {
    const card = this.tool(id);
    card.output.textContent = errorText;
    card.outputRow.hidden = false;
    this.setToolState(id, "error");
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

// Render stored messages: a user message is a user bubble; the assistant/tool messages after it form one bubble.
// Returns the last assistant view (or null) and the tool call ids whose tool message is still pending.
export function renderHistory(container, messages) {
  let current = null;
  const pending = [];
  for (const message of messages) {
    if (message.role === "user") {
      container.append(userBubble(message.content ?? ""));
      current = null;
      continue;
    }
    if (message.role !== "assistant" && message.role !== "tool") continue;
    if (!current) {
      current = new AssistantView();
      container.append(current.node);
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
