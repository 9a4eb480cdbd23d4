// The demo page: a protocol selector and seven panels (unary, server stream, error with
// details, metadata, deadline, and over a WebSocket a bidi chat and a client-stream upload).
// Every result shows its status, latency, bytes on the wire and payload.
// Elements carry data-testid attributes for tests/browser/demo.mjs; a result's data-state is
// "idle", "running" or "done", and data-protocol names the protocol of the call it shows.

import { create, toJsonString, type Message } from "@bufbuild/protobuf";

import {
  ChatRequestSchema,
  CountdownRequestSchema,
  DemoService,
  GreetRequestSchema,
  SlowRequestSchema,
  UploadRequestSchema,
  type ChatResponse,
  type CountdownResponse,
  type GreetResponse,
  type UploadResponse,
} from "./gen/switchboard/demo/v1/demo_pb";
import { call, PROTOCOLS, type CallRequest, type CallResult, type ProtocolId } from "./protocols";
import { openSocket, type SocketCall } from "./websocket";

type PanelId = "unary" | "stream" | "error" | "metadata" | "deadline" | "chat" | "upload";
const PANELS: readonly PanelId[] = ["unary", "stream", "error", "metadata", "deadline", "chat", "upload"];
/** What "Run all" runs: every panel but the chat, which waits for someone to type. */
const RUN_ALL: readonly PanelId[] = ["unary", "stream", "error", "metadata", "deadline", "upload"];

let protocol: ProtocolId = "connect-json";
/** Bumped per panel on every run and protocol change, so a stale call never draws. */
const generation: Record<PanelId, number> = { unary: 0, stream: 0, error: 0, metadata: 0, deadline: 0, chat: 0, upload: 0 };

// --- DOM helpers ---------------------------------------------------------------------------------

function $(selector: string, root: ParentNode = document): HTMLElement {
  const el = root.querySelector<HTMLElement>(selector);
  if (el === null) throw new Error(`missing element ${selector}`);
  return el;
}

type Child = Node | string | null | undefined | false;

function h(tag: string, attrs: Record<string, string> = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") el.className = v;
    else if (k === "testid") el.dataset["testid"] = v;
    else el.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

function field(panel: PanelId, name: string): string {
  return ($(`[data-panel="${panel}"] [name="${name}"]`) as HTMLInputElement).value;
}

function resultEl(panel: PanelId): HTMLElement {
  return $(`[data-testid="result-${panel}"]`);
}

function runButton(panel: PanelId): HTMLButtonElement {
  return $(`[data-testid="run-${panel}"]`) as HTMLButtonElement;
}

function formatBytes(n: number): string {
  return n < 10_000 ? `${n} B` : `${(n / 1024).toFixed(1)} KiB`;
}

function formatMs(ms: number): string {
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

function json(schema: Parameters<typeof toJsonString>[0], m: Message): string {
  return toJsonString(schema, m as never, { prettySpaces: 2 });
}

// --- Results -------------------------------------------------------------------------------------

function idle(panel: PanelId): void {
  const el = resultEl(panel);
  el.dataset["state"] = "idle";
  delete el.dataset["protocol"];
  el.replaceChildren(h("p", { class: "placeholder" }, "No call yet."));
  runButton(panel).disabled = false;
}

function running(panel: PanelId, what: string): void {
  const el = resultEl(panel);
  el.dataset["state"] = "running";
  el.dataset["protocol"] = protocol;
  el.replaceChildren(summary(panel, undefined, undefined), h("p", { class: "placeholder" }, what));
}

/** The status, latency and bytes line. */
function summary(panel: PanelId, result: CallResult | undefined, ms: number | undefined): HTMLElement {
  let status: HTMLElement;
  if (result === undefined) {
    status = h("span", { class: "status running", testid: `status-${panel}` }, "calling…");
  } else if (result.error) {
    const kind = result.error.code === "deadline_exceeded" ? "warn" : "err";
    status = h("span", { class: `status ${kind}`, testid: `status-${panel}`, title: `code ${result.error.codeNumber}` }, result.error.code);
  } else {
    status = h("span", { class: "status ok", testid: `status-${panel}` }, "ok");
  }
  const m = result?.meter;
  return h(
    "div",
    { class: "summary" },
    status,
    h("span", { class: "stat", testid: `latency-${panel}`, title: "latency" }, ms === undefined ? "…" : formatMs(ms)),
    h(
      "span",
      { class: "stat", testid: `bytes-${panel}`, title: "request and response body bytes on the wire" },
      m === undefined ? "…" : `↑ ${formatBytes(m.sent)} · ↓ ${formatBytes(m.received)}`,
    ),
    m !== undefined && m.contentType !== ""
      ? h(
          "span",
          { class: "wire", testid: `wire-${panel}`, title: "request method and content-type → response HTTP status" },
          `${m.httpMethod} ${m.contentType} → ${m.status === 0 ? "no response" : `HTTP ${m.status}`}`,
        )
      : null,
    m !== undefined && m.timeout !== ""
      ? h("span", { class: "wire", testid: `timeout-${panel}`, title: "the deadline, as sent" }, m.timeout)
      : null,
  );
}

function errorBlock(panel: PanelId, result: CallResult): HTMLElement | null {
  const err = result.error;
  if (!err) return null;
  return h(
    "div",
    { class: "error" },
    h("p", { class: "message", testid: `error-message-${panel}` }, err.message || "(no message)"),
    err.details.length > 0
      ? h(
          "ul",
          { class: "details", testid: `error-details-${panel}` },
          ...err.details.map((d) =>
            h("li", {}, h("code", {}, d.type), ...d.lines.map((l) => h("span", { class: "violation" }, l))),
          ),
        )
      : null,
  );
}

function done(panel: PanelId, result: CallResult, ms: number, body: Child[]): void {
  const el = resultEl(panel);
  el.replaceChildren(summary(panel, result, ms), errorBlock(panel, result) ?? "", ...body.filter((c): c is Node | string => !!c));
  el.dataset["state"] = "done";
  el.dataset["protocol"] = protocol;
}

function kvList(testid: string, title: string, entries: Record<string, string>): HTMLElement {
  const rows = Object.entries(entries);
  return h(
    "div",
    { class: "kv" },
    h("h3", {}, title),
    rows.length === 0
      ? h("p", { class: "placeholder", testid }, "none")
      : h("dl", { testid }, ...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
  );
}

// --- Panels --------------------------------------------------------------------------------------

async function run(panel: PanelId): Promise<void> {
  const gen = ++generation[panel];
  const current = () => generation[panel] === gen;
  runButton(panel).disabled = true;
  try {
    switch (panel) {
      case "unary":
      case "error":
        await runGreet(panel, field(panel, "name"), {}, current);
        break;
      case "metadata":
        await runGreet(panel, "metadata", { [`x-demo-${field(panel, "key").trim().toLowerCase() || "user"}`]: field(panel, "value") }, current);
        break;
      case "stream":
        await runStream(Number(field("stream", "from")) || 5, current);
        break;
      case "deadline":
        await runDeadline(Number(field("deadline", "sleep")), Number(field("deadline", "deadline")) || 1, current);
        break;
      case "upload":
        await runUpload(Number(field("upload", "chunks")) || 1, Number(field("upload", "size")) || 1, current);
        break;
    }
  } finally {
    if (current()) runButton(panel).disabled = false;
  }
}

async function timed(req: CallRequest): Promise<[CallResult, number]> {
  const start = performance.now();
  const result = await call(protocol, req);
  return [result, performance.now() - start];
}

async function runGreet(panel: PanelId, name: string, headers: Record<string, string>, current: () => boolean): Promise<void> {
  running(panel, "Waiting for the answer…");
  let response: GreetResponse | undefined;
  const [result, ms] = await timed({
    method: DemoService.method.greet,
    input: create(GreetRequestSchema, { name }),
    headers,
    onMessage: (m) => (response = m as GreetResponse),
  });
  if (!current()) return;
  const payload = response
    ? h("pre", { testid: `payload-${panel}` }, json(DemoService.method.greet.output, response))
    : null;
  if (panel !== "metadata") {
    done(panel, result, ms, [payload]);
    return;
  }
  done(panel, result, ms, [
    h(
      "div",
      { class: "kvs" },
      kvList("metadata-sent", "Sent", headers),
      kvList("metadata-seen", "Service received", response?.metadata ?? {}),
      kvList("metadata-headers", "Response headers", result.headers),
      kvList("metadata-trailers", "Response trailers", result.trailers),
    ),
  ]);
}

async function runStream(from: number, current: () => boolean): Promise<void> {
  running("stream", "Waiting for the first message…");
  const list = h("ol", { class: "messages", testid: "stream-messages" });
  const bar = h("div", { class: "bar" });
  const progress = h("div", { class: "progress", testid: "stream-progress" }, bar);
  const count = h("span", { class: "count", testid: "stream-count" }, `0 / ${from}`);
  const start = performance.now();
  let received = 0;
  const [result, ms] = await timed({
    method: DemoService.method.countdown,
    input: create(CountdownRequestSchema, { from }),
    headers: {},
    onMessage: (m) => {
      if (!current()) return;
      const msg = m as CountdownResponse;
      received++;
      if (received === 1) resultEl("stream").replaceChildren(summary("stream", undefined, undefined), h("div", { class: "stream-head" }, progress, count), list);
      list.append(
        h(
          "li",
          { testid: "stream-message" },
          h("span", { class: "n" }, String(msg.remaining)),
          h("span", { class: "label" }, msg.remaining === 1 ? "…liftoff" : "remaining"),
          h("span", { class: "t" }, `+${Math.round(performance.now() - start)} ms`),
        ),
      );
      count.textContent = `${received} / ${from}`;
      bar.style.width = `${Math.min(100, (received / from) * 100)}%`;
    },
  });
  if (!current()) return;
  done("stream", result, ms, [received > 0 ? h("div", { class: "stream-head" }, progress, count) : null, received > 0 ? list : null]);
}

async function runDeadline(sleepMs: number, timeoutMs: number, current: () => boolean): Promise<void> {
  running("deadline", `Calling Slow (sleeps ${sleepMs} ms) with a ${timeoutMs} ms deadline…`);
  let response: Message | undefined;
  const [result, ms] = await timed({
    method: DemoService.method.slow,
    input: create(SlowRequestSchema, { sleepMs }),
    headers: {},
    timeoutMs,
    onMessage: (m) => (response = m),
  });
  if (!current()) return;
  let note: string | null = null;
  if (result.error?.code === "deadline_exceeded") {
    note =
      result.meter.status === 0
        ? "The client library's own timer ended the call; Switchboard enforces the same deadline and would have answered deadline_exceeded too."
        : "Switchboard ended the call at the deadline, cancelled it upstream and answered deadline_exceeded.";
  }
  done("deadline", result, ms, [
    note ? h("p", { class: "note", testid: "deadline-note" }, note) : null,
    response ? h("pre", { testid: "payload-deadline" }, json(DemoService.method.slow.output, response)) : null,
  ]);
}

// --- Over a WebSocket: chat (bidi) and upload (client stream) -----------------------------------

/** The open chat, if any: its call, its message list and when it started. */
let chat: { call: SocketCall; list: HTMLElement; start: number; gen: number } | null = null;

function chatLine(who: "you" | "echo", text: string, index?: number): HTMLElement {
  return h(
    "li",
    { class: `chat-${who}`, testid: `chat-${who}` },
    h("span", { class: "label" }, who === "you" ? "you" : `#${index ?? 0}`),
    h("span", { class: "text" }, text),
  );
}

/** Sends one chat message, opening the chat (one bidi call) first if none is open. */
function sendChat(text: string): void {
  if (chat === null) {
    const gen = generation.chat;
    const list = h("ol", { class: "chat", testid: "chat-messages" });
    running("chat", "");
    resultEl("chat").replaceChildren(summary("chat", undefined, undefined), list);
    const socket = openSocket(DemoService.method.chat, {}, (m) => {
      if (generation.chat !== gen) return;
      const answer = m as ChatResponse;
      list.append(chatLine("echo", answer.text, answer.index));
    });
    chat = { call: socket, list, start: performance.now(), gen };
    (endChatButton()).disabled = false;
    void socket.result.then((result) => {
      if (generation.chat !== gen || chat === null) return;
      const { list: l, start } = chat;
      chat = null;
      endChatButton().disabled = true;
      done("chat", result, performance.now() - start, [l]);
    });
  }
  chat.list.append(chatLine("you", text));
  chat.call.send(create(ChatRequestSchema, { text }));
  const input = $('[data-panel="chat"] [name="text"]') as HTMLInputElement;
  input.select();
}

function endChatButton(): HTMLButtonElement {
  return $('[data-testid="end-chat"]') as HTMLButtonElement;
}

/** Ends the chat: the client finishes sending, the service ends the call. */
function endChat(): void {
  chat?.call.finish();
}

/** Drops an open chat (the socket closes, which cancels the call upstream). */
function closeChat(): void {
  chat?.call.cancel();
  chat = null;
  endChatButton().disabled = true;
}

async function runUpload(chunks: number, sizeKiB: number, current: () => boolean): Promise<void> {
  running("upload", "Uploading…");
  const bar = h("div", { class: "bar" });
  const progress = h("div", { class: "progress", testid: "upload-progress" }, bar);
  const count = h("span", { class: "count", testid: "upload-count" }, `0 / ${chunks}`);
  resultEl("upload").replaceChildren(summary("upload", undefined, undefined), h("div", { class: "stream-head" }, progress, count));
  let response: UploadResponse | undefined;
  const start = performance.now();
  const socket = openSocket(DemoService.method.upload, {}, (m) => (response = m as UploadResponse));
  const chunk = new Uint8Array(sizeKiB * 1024).fill(0x2a);
  for (let i = 1; i <= chunks && current(); i++) {
    socket.send(create(UploadRequestSchema, { chunk }));
    count.textContent = `${i} / ${chunks}`;
    bar.style.width = `${(i / chunks) * 100}%`;
    // Paced, so the counter is seen to move; each chunk is on its way at once.
    await new Promise((r) => setTimeout(r, 40));
  }
  if (!current()) {
    socket.cancel();
    return;
  }
  socket.finish();
  const result = await socket.result;
  if (!current()) return;
  done("upload", result, performance.now() - start, [
    h("div", { class: "stream-head" }, progress, count),
    response ? h("pre", { testid: "payload-upload" }, json(DemoService.method.upload.output, response)) : null,
  ]);
}

// --- Protocol selector -----------------------------------------------------------------------

function selectProtocol(id: ProtocolId): void {
  protocol = id;
  const p = PROTOCOLS.find((x) => x.id === id) ?? PROTOCOLS[0]!;
  for (const b of document.querySelectorAll<HTMLButtonElement>("[data-protocol]")) {
    const on = b.dataset["protocol"] === id;
    b.setAttribute("aria-checked", String(on));
    b.classList.toggle("on", on);
  }
  $('[data-testid="protocol-content-type"]').textContent = p.contentType;
  $('[data-testid="protocol-library"]').textContent = p.library;
  document.body.dataset["protocol"] = id;
  closeChat();
  for (const panel of PANELS) {
    generation[panel]++;
    idle(panel);
  }
  if (location.hash !== `#${id}`) history.replaceState(null, "", `#${id}`);
}

function init(): void {
  for (const b of document.querySelectorAll<HTMLButtonElement>("[data-protocol]")) {
    b.addEventListener("click", () => selectProtocol(b.dataset["protocol"] as ProtocolId));
  }
  for (const panel of PANELS) {
    $(`[data-panel="${panel}"] form`).addEventListener("submit", (e) => {
      e.preventDefault();
      // The chat stays open across sends; each send is one more message on the same call.
      if (panel === "chat") sendChat(field("chat", "text"));
      else void run(panel);
    });
  }
  endChatButton().addEventListener("click", endChat);
  const all = $('[data-testid="run-all"]') as HTMLButtonElement;
  all.addEventListener("click", async () => {
    all.disabled = true;
    try {
      for (const panel of RUN_ALL) await run(panel);
    } finally {
      all.disabled = false;
    }
  });
  const fromHash = () => PROTOCOLS.find((p) => `#${p.id}` === location.hash)?.id;
  window.addEventListener("hashchange", () => {
    const id = fromHash();
    if (id !== undefined && id !== protocol) selectProtocol(id);
  });
  selectProtocol(fromHash() ?? "connect-json");
  document.body.dataset["ready"] = "true";
}

init();
