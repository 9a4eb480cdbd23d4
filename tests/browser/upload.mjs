// Streaming uploads from Chromium: a Connect stream and a gRPC-Web call whose request body is a
// ReadableStream (fetch with duplex: "half", which Chromium sends only over HTTP/2, so over
// TLS). Driven by tests/integration/browser_streams.rs, which owns the backend:
//
//   node tests/browser/upload.mjs --url https://127.0.0.1:PORT
//
// For each protocol the page sends message 1, then this script prints `WAIT <protocol> <n>`
// (n counts the messages of every upload so far) and reads a line from stdin: the test answers
// `GO` once the backend has received n messages. Only then
// does the page send message 2, and so on. A proxy that held the body back until it ended would
// never let the backend see message 1: the test would wait in vain. Prints one PASS/FAIL line
// per protocol, then "N passed, N failed".

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: args } = parseArgs({ options: { url: { type: "string" } } });
if (!args.url) {
  console.error("usage: upload.mjs --url https://127.0.0.1:PORT");
  process.exit(2);
}

const METHOD = "/switchboard.testing.v1.TestService/ClientStream";
const MESSAGES = ["one", "two", "three"];
const STEP_TIMEOUT = 15_000;

const PROTOCOLS = [
  { id: "connect", headers: { "content-type": "application/connect+proto", "connect-protocol-version": "1" } },
  { id: "grpc-web", headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" } },
];

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Tells the test how far the upload is and waits until the backend has caught up. */
let before = 0;
async function waitForBackend(protocol, n) {
  console.log(`WAIT ${protocol} ${before + n}`);
  const { value, done } = await lines.next();
  if (done || value.trim() !== "GO") throw new Error(`the test answered ${JSON.stringify(value)}`);
}

let passes = 0;
let failures = 0;
const userDataDir = await mkdtemp(join(tmpdir(), "switchboard-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // The proxy's certificate is a test certificate (rcgen).
    ignoreHTTPSErrors: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors", "--no-first-run"],
    timeout: 60_000,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  // Any page of the proxy's origin: the calls are then same-origin.
  await page.goto(`${args.url}/`, { timeout: STEP_TIMEOUT });
  await page.exposeFunction("waitForBackend", waitForBackend);
  for (const p of PROTOCOLS) {
    try {
      const out = await page.evaluate(
        async ({ url, headers, messages, protocol }) => {
          const encoder = new TextEncoder();
          // EchoRequest { message = 1 } in one length-prefixed frame.
          const frame = (text) => {
            const s = encoder.encode(text);
            const msg = new Uint8Array([0x0a, s.length, ...s]);
            const f = new Uint8Array(5 + msg.length);
            new DataView(f.buffer).setUint32(1, msg.length);
            f.set(msg, 5);
            return f;
          };
          let sent = 0;
          const body = new ReadableStream({
            async pull(controller) {
              if (sent > 0) await window.waitForBackend(protocol, sent);
              if (sent === messages.length) {
                controller.close();
                return;
              }
              controller.enqueue(frame(messages[sent++]));
            },
          });
          const res = await fetch(url, { method: "POST", headers, body, duplex: "half" });
          const bytes = new Uint8Array(await res.arrayBuffer());
          return { status: res.status, body: new TextDecoder("latin1").decode(bytes), sent };
        },
        { url: `${args.url}${METHOD}`, headers: p.headers, messages: MESSAGES, protocol: p.id },
      );
      before += out.sent;
      if (out.status !== 200) throw new Error(`HTTP ${out.status}: ${out.body}`);
      if (!out.body.includes(MESSAGES.join(","))) throw new Error(`no joined messages in ${JSON.stringify(out.body)}`);
      const ok = p.id === "connect" ? !out.body.includes('"error"') : /grpc-status:0\r\n/.test(out.body);
      if (!ok) throw new Error(`the call did not end OK: ${JSON.stringify(out.body)}`);
      passes++;
      console.log(`PASS ${p.id}: ${out.sent} messages, each seen by the backend before the next was sent`);
    } catch (e) {
      failures++;
      console.log(`FAIL ${p.id}: ${String(e?.message ?? e).split("\n")[0]}`);
    }
  }
} catch (e) {
  failures++;
  console.log(`FAIL browser: ${e?.stack ?? e}`);
} finally {
  await context?.close().catch(() => {});
  await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
}
console.log(`${passes} passed, ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
