#!/usr/bin/env node
// Self-test for oracle.mjs: serve hand-written SSE streams from a local HTTP server and check
// that the oracle (run as a real subprocess, like pytest will) reports what we expect.
//
//   node tests/contract/selftest.mjs [--ai PKG ...]   (default: every copy of `ai` in package.json)
//
// Exits non-zero if any expectation fails. Case (f), an extra key on a known chunk, is not an
// expectation: it only records whether the pinned version validates strictly.
//
// It runs on this machine's Node for every pinned client, ai 7.x included although its package
// declares Node >= 22: every case passing with `--ai ai7` on Node 20 is the proof that the 7.x
// client imports, validates, parses and assembles messages here (tests/contract/test_ai_sdk_contract.py
// runs this file).

import http from 'node:http';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = fileURLToPath(new URL('.', import.meta.url));
const oracle = `${here}oracle.mjs`;
const run = promisify(execFile);
const TOKEN = 'selftest-token';

// --- the streams --------------------------------------------------------------------------
const text = [
  { type: 'start', messageId: 'msg-1' },
  { type: 'start-step' },
  { type: 'text-start', id: 't1' },
  { type: 'text-delta', id: 't1', delta: 'Hel' },
  { type: 'text-delta', id: 't1', delta: 'lo, ' },
  { type: 'text-delta', id: 't1', delta: 'world' },
  { type: 'text-end', id: 't1' },
  { type: 'finish-step' },
  { type: 'finish' },
];
const tool = [
  { type: 'start', messageId: 'msg-2' },
  { type: 'start-step' },
  { type: 'tool-input-start', toolCallId: 'call_1', toolName: 'search', dynamic: true, providerExecuted: true },
  { type: 'tool-input-available', toolCallId: 'call_1', toolName: 'search', input: { q: 'x' }, dynamic: true, providerExecuted: true },
  { type: 'tool-output-available', toolCallId: 'call_1', output: { hits: 3 }, dynamic: true, providerExecuted: true },
  { type: 'finish-step' },
  { type: 'start-step' },
  { type: 'text-start', id: 't2' },
  { type: 'text-delta', id: 't2', delta: 'Found 3.' },
  { type: 'text-end', id: 't2' },
  { type: 'finish-step' },
  { type: 'finish' },
];
const title = [
  { type: 'start', messageId: 'msg-3' },
  { type: 'data-title', id: 'title', data: { title: 'x' } },
  { type: 'finish' },
];
const deltaWithoutStart = [
  { type: 'start', messageId: 'msg-4' },
  { type: 'text-delta', id: 'nope', delta: 'orphan' },
  { type: 'finish' },
];
const unknownType = [{ type: 'start', messageId: 'msg-5' }, { type: 'usage' }, { type: 'finish' }];
const extraKey = [
  { type: 'start', messageId: 'msg-6' },
  { type: 'text-start', id: 't', extra: 1 },
  { type: 'text-delta', id: 't', delta: 'ok' },
  { type: 'text-end', id: 't' },
  { type: 'finish' },
];
const errorChunk = [{ type: 'start', messageId: 'msg-7' }, { type: 'error', errorText: 'boom' }];
const unknownToolOutput = [
  { type: 'start', messageId: 'msg-8' },
  { type: 'tool-output-available', toolCallId: 'ghost', output: 1, dynamic: true, providerExecuted: true },
];

// A continuation of msg-2 (the oracle's --message): one more text part in the same message.
const continued = [
  { type: 'start', messageId: 'msg-2' },
  { type: 'start-step' },
  { type: 'text-start', id: 't3' },
  { type: 'text-delta', id: 't3', delta: ' And more.' },
  { type: 'text-end', id: 't3' },
  { type: 'finish-step' },
  { type: 'finish' },
];

const streams = { text, tool, title, deltaWithoutStart, unknownType, extraKey, errorChunk, unknownToolOutput, continued };

// --- the server: PROTOCOL.md wire format, plus `: ping` comments and `id:` lines ----------
const server = http.createServer((req, res) => {
  if (req.headers.authorization !== `Bearer ${TOKEN}`) {
    res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"unauthorized"}');
    return;
  }
  const url = new URL(req.url, 'http://x');
  if (req.method === 'GET' && url.pathname === '/chat/none/stream') return res.writeHead(204).end();
  const name = url.pathname === '/chat/resumable/stream' ? 'text' : url.pathname.split('/')[2];
  // The level header the oracle sent, echoed as a data part.
  const level = [
    { type: 'start', messageId: 'msg-9' },
    { type: 'data-level', data: req.headers['x-ui-stream-protocol'] ?? null },
    { type: 'finish' },
  ];
  const chosen = name === 'level' ? level : streams[name];
  if (!chosen) return res.writeHead(404).end();

  // Consume the request body (POST) before answering; check what the transport sent.
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', async () => {
    if (req.method === 'POST') {
      const parsed = JSON.parse(body);
      if (!req.headers['content-type']?.startsWith('application/json') || !Array.isArray(parsed.messages)) {
        return res.writeHead(400).end('bad request body');
      }
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-vercel-ai-ui-message-stream': 'v1',
      'x-accel-buffering': 'no',
    });
    res.write(': ping\n\n');
    let i = 0;
    for (const chunk of chosen) {
      i += 1;
      res.write(`id: ${i}-0\ndata: ${JSON.stringify(chunk)}\n\n`);
      if (i % 3 === 0) res.write(': ping\n\n');
      await new Promise((r) => setTimeout(r, 2)); // separate TCP writes, like a real stream
    }
    res.end('data: [DONE]\n\n');
  });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const base = `http://127.0.0.1:${server.address().port}`;

// --- running the oracle ---------------------------------------------------------------------
const body = JSON.stringify({
  id: 'chat-1',
  messages: [{ id: 'u1', role: 'user', parts: [{ type: 'text', text: 'hi' }] }],
  trigger: 'submit-message',
  messageId: null,
});

async function oracleRun(ai, args) {
  const { stdout } = await run(process.execPath, [oracle, ...args, '--ai', ai, '--timeout', '10000']);
  const lines = stdout.trim().split('\n');
  if (lines.length !== 1) throw new Error(`expected one output line, got ${lines.length}`);
  return JSON.parse(lines[0]);
}
const chat = (ai, name, ...more) => oracleRun(ai, ['chat', '--url', `${base}/chat/${name}`, '--token', TOKEN, '--body', body, ...more]);
const resume = (ai, id, ...more) => oracleRun(ai, ['resume', '--url', `${base}/chat/${id}/stream`, '--token', TOKEN, ...more]);

const textOf = (m) => m?.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');

const cases = {
  'a plain text': async (ai) => {
    const r = await chat(ai, 'text');
    check(r.ok && r.error === null, r);
    check(r.status === 200 && r.headers['x-vercel-ai-ui-message-stream'] === 'v1', r);
    check(r.chunks.length === text.length && r.chunks[3].delta === 'Hel', r);
    check(r.message.id === 'msg-1' && r.message.role === 'assistant', r);
    const parts = r.message.parts.filter((p) => p.type === 'text');
    check(parts.length === 1 && parts[0].text === 'Hello, world' && parts[0].state === 'done', r);
  },
  'b server-run dynamic tool': async (ai) => {
    const r = await chat(ai, 'tool');
    check(r.ok, r);
    const t = r.message.parts.find((p) => p.type === 'dynamic-tool');
    check(t && t.state === 'output-available' && t.toolName === 'search' && t.toolCallId === 'call_1', r);
    check(t.output.hits === 3 && t.input.q === 'x', r);
    check(textOf(r.message) === 'Found 3.', r);
  },
  'c data-title part': async (ai) => {
    const r = await chat(ai, 'title');
    check(r.ok, r);
    const d = r.message.parts.find((p) => p.type === 'data-title');
    check(d && d.id === 'title' && d.data.title === 'x', r);
  },
  'd text-delta without text-start': async (ai) => {
    const r = await chat(ai, 'deltaWithoutStart');
    check(!r.ok && r.error, r); // 5.x: a TypeError from the state machine; 6.x: "text part ... not found"
    return r.error.slice(0, 70);
  },
  'e unknown chunk type': async (ai) => {
    const r = await chat(ai, 'unknownType');
    check(!r.ok && /validation/i.test(r.error) && r.chunks[1].type === 'usage', r);
    check(r.chunks.length === unknownType.length, r); // chunks keep the whole stream, even after the failure
  },
  'f extra key (informational)': async (ai) => {
    const r = await chat(ai, 'extraKey');
    return r.ok ? 'ACCEPTED (lenient validation)' : `REJECTED (strict): ${r.error.slice(0, 60)}...`;
  },
  'g resume with nothing to resume': async (ai) => {
    const r = await resume(ai, 'none');
    check(r.status === 204 && r.ok && r.message === null && r.chunks.length === 0, r);
  },
  'h error chunk': async (ai) => {
    const r = await chat(ai, 'errorChunk');
    check(!r.ok && r.error.includes('boom'), r);
  },
  'i tool output for unknown call id': async (ai) => {
    const r = await chat(ai, 'unknownToolOutput');
    check(!r.ok && /ghost|tool/i.test(r.error), r);
  },
  'j resume replay': async (ai) => {
    const r = await resume(ai, 'resumable');
    check(r.ok && textOf(r.message) === 'Hello, world', r);
  },
  'k abort after 4 chunks': async (ai) => {
    const r = await chat(ai, 'text', '--abort-after-chunks', '4');
    check(r.ok && r.aborted && r.chunks.length === 4 && textOf(r.message) === 'Hel', r);
  },
  'l HTTP 401': async (ai) => {
    const r = await oracleRun(ai, ['chat', '--url', `${base}/chat/text`, '--token', 'wrong', '--body', body]);
    check(!r.ok && r.status === 401 && r.error.startsWith('HTTP 401'), r);
  },
  'm --level sends x-ui-stream-protocol': async (ai) => {
    const sent = await chat(ai, 'level', '--level', 'v6');
    check(sent.ok && sent.message.parts.find((p) => p.type === 'data-level')?.data === 'v6', sent);
    const unsent = await chat(ai, 'level');
    check(unsent.ok && unsent.message.parts.find((p) => p.type === 'data-level')?.data === null, unsent);
  },
  'n --message continues an assistant message': async (ai) => {
    const first = await chat(ai, 'tool');
    check(first.ok, first);
    const r = await chat(ai, 'continued', '--message', JSON.stringify(first.message));
    check(r.ok && r.message.id === 'msg-2', r);
    check(r.message.parts.find((p) => p.type === 'dynamic-tool')?.state === 'output-available', r);
    check(textOf(r.message) === 'Found 3. And more.', r);
  },
};

function check(cond, r) {
  if (!cond) throw new Error(`unexpected oracle output: ${JSON.stringify(r)}`);
}

// --- main -------------------------------------------------------------------------------------
const pkg = JSON.parse(readFileSync(`${here}package.json`, 'utf8'));
const argv = process.argv.slice(2);
const ais = argv[0] === '--ai' ? argv.slice(1) : Object.keys(pkg.dependencies).filter((d) => d.startsWith('ai'));

let failures = 0;
console.log(`node ${process.version}`);
for (const ai of ais) {
  console.log(`# ${ai} (${pkg.dependencies[ai]})`);
  for (const [name, fn] of Object.entries(cases)) {
    try {
      const note = await fn(ai);
      console.log(`  ok   ${name}${note ? `: ${note}` : ''}`);
    } catch (e) {
      failures += 1;
      console.log(`  FAIL ${name}: ${e.message}`);
    }
  }
}
server.close();
console.log(failures ? `${failures} failure(s)` : 'all passed');
process.exit(failures ? 1 : 0);
