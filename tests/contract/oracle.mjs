#!/usr/bin/env node
// Protocol oracle: consume our chat endpoint's SSE stream with the real, published `ai`
// package, exactly along the code path `useChat` uses, and print what the client assembled.
//
//   node oracle.mjs chat   --url URL [--token T] --body JSON|-   [options]
//   node oracle.mjs resume --url URL/{chatId}/stream [--token T] [options]
//
// Options:
//   --abort-after-chunks N  read N chunks, then abort the fetch (a page reload mid-stream)
//   --ai PKG                which installed copy of `ai` to use: ai (default, latest 5.x), ai5-strict,
//                           ai6, ai7 (env ORACLE_AI works too); see package.json
//   --level v5|v6|v7        send `x-ui-stream-protocol: LEVEL` (the server's protocol level for this
//                           request); without it the server uses its configured level
//   --message JSON|-        the assistant UIMessage the stream continues (what AbstractChat passes when
//                           the last message is the assistant's: a continuation after a tool approval)
//   --header 'Name: value'  extra request header (repeatable)
//   --timeout MS            abort the whole exchange after MS milliseconds (default 60000)
//
// Output: ONE JSON line on stdout, exit 0:
//   {status, ok, error, chunks, message, headers, aborted, ai}
// status: HTTP status (null if the request never got one); ok: false if the client would have
// failed the chat (HTTP error, invalid/unknown chunk, ordering error, an `error` chunk, the
// timeout), and `error` then says why (the client's own error name and message);
// chunks: every JSON payload of the response in order, as sent (before schema validation),
// including those after a failure ({"__unparseable__": text} for invalid JSON);
// message: the last UIMessage snapshot {id, role, parts, metadata?} the client assembled (on top
// of --message, when given), or null if it never produced one (204, HTTP error, or a stream that
// changes nothing);
// headers: response headers, lower-cased; aborted: --abort-after-chunks fired; ai: "pkg@version".
// Exit 2 only for misuse of the harness itself.
//
// How it mirrors useChat: requests go through the package's own `DefaultChatTransport`
// (sendMessages = POST, reconnectToStream = GET, 204 -> nothing to resume), whose
// processResponseStream is `parseJsonEventStream({stream, schema: uiMessageChunkSchema})` and
// throws on the first invalid chunk. The validated chunks are fed to `readUIMessageStream`,
// which runs the same `processUIMessageStream` state machine AbstractChat (useChat) runs.

import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { createParser } from 'eventsource-parser';

const USAGE = `usage:
  node oracle.mjs chat   --url URL [--token T] --body JSON|- [--abort-after-chunks N] [--ai PKG] [--level L] [--message JSON|-] [--header 'K: V'] [--timeout MS]
  node oracle.mjs resume --url URL [--token T] [--abort-after-chunks N] [--ai PKG] [--level L] [--message JSON|-] [--header 'K: V'] [--timeout MS]`;

function die(msg) {
  process.stderr.write(`oracle: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function parseCli(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        url: { type: 'string' },
        token: { type: 'string' },
        body: { type: 'string' },
        'abort-after-chunks': { type: 'string' },
        ai: { type: 'string' },
        level: { type: 'string' },
        message: { type: 'string' },
        header: { type: 'string', multiple: true },
        timeout: { type: 'string' },
      },
    });
  } catch (e) {
    die(e.message);
  }
  const { values: v, positionals } = parsed;
  const mode = positionals[0];
  if (positionals.length !== 1 || !['chat', 'resume'].includes(mode)) die('expected one command: chat | resume');
  if (!v.url) die('--url is required');

  if (v.body === '-' && v.message === '-') die('only one of --body and --message can read stdin');
  let body;
  if (mode === 'chat') {
    if (v.body == null) die('chat needs --body');
    try {
      body = JSON.parse(v.body === '-' ? readFileSync(0, 'utf8') : v.body);
    } catch (e) {
      die(`--body is not valid JSON: ${e.message}`);
    }
    if (typeof body !== 'object' || body === null || !Array.isArray(body.messages)) {
      die('--body must be an object with a "messages" array');
    }
  } else if (v.body != null) {
    die('resume takes no --body');
  }

  let message;
  if (v.message != null) {
    try {
      message = JSON.parse(v.message === '-' ? readFileSync(0, 'utf8') : v.message);
    } catch (e) {
      die(`--message is not valid JSON: ${e.message}`);
    }
    if (typeof message !== 'object' || message === null || message.role !== 'assistant' || !Array.isArray(message.parts)) {
      die('--message must be an assistant UIMessage {id, role: "assistant", parts: [...]}');
    }
  }

  const toInt = (s, name) => {
    if (s == null) return null;
    const n = Number(s);
    if (!Number.isInteger(n) || n < 1) die(`${name} must be a positive integer`);
    return n;
  };

  const headers = {};
  for (const h of v.header ?? []) {
    const i = h.indexOf(':');
    if (i < 1) die(`bad --header ${JSON.stringify(h)} (want 'Name: value')`);
    headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
  }
  if (v.token) headers.authorization = `Bearer ${v.token}`;
  if (v.level != null) {
    if (!/^v[567]$/.test(v.level)) die('--level must be v5, v6 or v7');
    headers['x-ui-stream-protocol'] = v.level;
  }

  return {
    mode,
    url: v.url,
    body,
    message,
    headers,
    abortAfter: toInt(v['abort-after-chunks'], '--abort-after-chunks'),
    timeout: toInt(v.timeout, '--timeout') ?? 60_000,
    aiPackage: v.ai ?? process.env.ORACLE_AI ?? 'ai',
  };
}

async function loadAi(name) {
  let ai;
  try {
    ai = await import(name); // bare specifier: resolved from this folder's node_modules
  } catch (e) {
    die(`cannot import ${JSON.stringify(name)} (did you run "npm ci --prefix tests/contract"?): ${e.message}`);
  }
  for (const fn of ['DefaultChatTransport', 'readUIMessageStream', 'parseJsonEventStream']) {
    if (typeof ai[fn] !== 'function') die(`${name} does not export ${fn}`);
  }
  let version = null;
  try {
    const pkgJson = new URL(`./node_modules/${name}/package.json`, import.meta.url);
    version = JSON.parse(readFileSync(pkgJson, 'utf8')).version;
  } catch { /* unknown version is fine */ }
  return { ai, label: version ? `${name}@${version}` : name };
}

function describe(err) {
  if (err == null) return null;
  const name = err.name && err.name !== 'Error' ? `${err.name}: ` : '';
  return `${name}${err.message ?? String(err)}`;
}

async function main() {
  const opts = parseCli(process.argv.slice(2));
  const { ai, label } = await loadAi(opts.aiPackage);

  const out = {
    status: null, ok: true, error: null, chunks: [], message: null, headers: {}, aborted: false, ai: label,
  };
  const errors = [];
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(`oracle timeout after ${opts.timeout} ms`)), opts.timeout);

  // Raw tap: a fetch wrapper that records status + headers and re-wraps the body so that every
  // byte is fed to an SSE parser (the same eventsource-parser the client uses) *before* the
  // transport sees it. `chunks` keeps each JSON payload exactly as sent (the schema may strip or
  // reject keys) and is never behind what the client has consumed.
  let pumped = Promise.resolve();
  const tapFetch = async (input, init) => {
    const res = await fetch(input, init);
    out.status = res.status;
    res.headers.forEach((value, key) => { out.headers[key] = value; });
    if (!res.body || !res.ok) return res;
    const sse = createParser({
      onEvent({ data }) {
        if (data === '[DONE]') return;
        try {
          out.chunks.push(JSON.parse(data));
        } catch {
          out.chunks.push({ __unparseable__: data });
        }
      },
    });
    // Push-based: one pump reads the whole body, feeds the tap, then hands the bytes on. If the
    // client stops early (it failed on a chunk), keep pumping so `chunks` shows the full stream;
    // only an abort (or the timeout) cuts it short.
    const decoder = new TextDecoder();
    let client;
    let clientOpen = true;
    const body = new ReadableStream({
      start(c) { client = c; },
      cancel() { clientOpen = false; },
    });
    const toClient = (fn) => {
      if (!clientOpen) return;
      try { fn(); } catch { clientOpen = false; }
    };
    const reader = res.body.getReader();
    // Node 20's fetch leaves a pending read hanging forever when the request is aborted after
    // the body was fully received; cancelling the reader ourselves settles it.
    init?.signal?.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
    pumped = (async () => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          sse.feed(decoder.decode(value, { stream: true }));
          toClient(() => client.enqueue(value));
        }
        // A cancelled read ends with done=true too: don't let an abort look like a clean end.
        toClient(() => (init?.signal?.aborted ? client.error(init.signal.reason) : client.close()));
      } catch (e) {
        toClient(() => client.error(e));
      }
    })();
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };

  const transport = new ai.DefaultChatTransport({
    api: opts.url,
    headers: opts.headers,
    fetch: tapFetch,
    // useChat would derive the resume URL as `${api}/${chatId}/stream`; we are handed it directly.
    prepareReconnectToStreamRequest: () => ({ api: opts.url }),
  });

  let delivered = 0;
  try {
    let chunkStream;
    if (opts.mode === 'chat') {
      // Same call AbstractChat.makeRequest makes; the transport rebuilds
      // {...body, id, messages, trigger, messageId} exactly like DefaultChatTransport does.
      const { id, messages, trigger = 'submit-message', messageId, ...rest } = opts.body;
      chunkStream = await transport.sendMessages({
        chatId: id, messages, trigger, messageId, body: rest, abortSignal: controller.signal,
      });
    } else {
      chunkStream = await transport.reconnectToStream({ chatId: 'resume', abortSignal: controller.signal });
    }

    if (chunkStream != null) { // null = 204, nothing to resume
      const counted = chunkStream.pipeThrough(new TransformStream({
        transform(chunk, c) {
          c.enqueue(chunk);
          delivered += 1;
          if (opts.abortAfter != null && delivered >= opts.abortAfter) {
            // Simulate a page reload: end the client's view here, then kill the connection.
            out.aborted = true;
            c.terminate();
            controller.abort();
          }
        },
      }));
      // terminateOnError: like AbstractChat, the first error ends the stream.
      const snapshots = ai.readUIMessageStream({
        message: opts.message,
        stream: counted,
        terminateOnError: true,
        onError: (e) => errors.push(e),
      });
      for await (const snapshot of snapshots) out.message = snapshot;
    }
  } catch (e) {
    if (!(out.aborted && controller.signal.aborted)) errors.push(e);
  }

  await pumped; // still under the timeout: a stream that never ends is cut by the abort
  clearTimeout(timer);
  if (controller.signal.aborted && !out.aborted) errors.push(controller.signal.reason); // timeout
  if (out.aborted) out.chunks = out.chunks.slice(0, delivered); // the tap may have read ahead
  if (errors.length) {
    out.ok = false;
    out.error = describe(errors[0]);
  }
  if (out.status != null && out.status !== 204 && (out.status < 200 || out.status > 299)) {
    out.ok = false;
    out.error = `HTTP ${out.status}: ${out.error ?? ''}`;
  }
  printed = true;
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

// Safety net: if some stream never settles, Node exits with code 13 ("unsettled top-level
// await") and no output. Still print one JSON line so the caller sees a clear failure.
let printed = false;
process.on('exit', (code) => {
  if (printed || code === 2) return;
  process.stdout.write(`${JSON.stringify({ status: null, ok: false, error: 'oracle: stream never settled', chunks: [], message: null, headers: {}, aborted: false, ai: null })}\n`);
  process.exitCode = 0;
});

await main();
