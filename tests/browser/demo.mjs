// Drives the demo page in headless Chromium (the Debian `chromium` package, never a downloaded
// browser) through playwright-core: every panel in every protocol, asserting what the page shows
// (the chat and upload panels call over a WebSocket, with the real @improbable-eng/grpc-web).
// Prints one PASS/FAIL line per check and exits non-zero if any failed.
//
//   node tests/browser/demo.mjs --url http://127.0.0.1:8080/ --screenshot out.png \
//        [--mobile-screenshot out-375.png] [--protocol connect-json ...]
//
// Chromium is $CHROMIUM or /usr/bin/chromium. Run by tests/integration/demo.rs.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    screenshot: { type: "string" },
    "mobile-screenshot": { type: "string" },
    protocol: { type: "string", multiple: true },
    width: { type: "string", default: "1200" },
  },
});
if (!args.url) {
  console.error("usage: demo.mjs --url URL [--screenshot PATH] [--mobile-screenshot PATH] [--protocol ID]...");
  process.exit(2);
}

/** Each protocol, with the content-types and deadline header its calls must show. */
const PROTOCOLS = [
  { id: "connect-json", unary: "POST application/json", stream: "application/connect+json", timeout: "connect-timeout-ms: " },
  { id: "connect-proto", unary: "POST application/proto", stream: "application/connect+proto", timeout: "connect-timeout-ms: " },
  { id: "grpc-web", unary: "POST application/grpc-web+proto", stream: "application/grpc-web+proto", timeout: "grpc-timeout: " },
  { id: "grpc-web-text", unary: "POST application/grpc-web-text", stream: "application/grpc-web-text", timeout: "grpc-timeout: " },
].filter((p) => !args.protocol || args.protocol.includes(p.id));

const STEP_TIMEOUT = 15_000;
let failures = 0;
let passes = 0;

async function check(name, fn) {
  try {
    await fn();
    passes++;
    console.log(`PASS ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${String(e?.message ?? e).split("\n").slice(0, 6).join("\n     ")}`);
  }
}

function expect(cond, message) {
  if (!cond) throw new Error(message);
}

const tid = (id) => `[data-testid="${id}"]`;

async function text(page, selector) {
  return (await page.locator(selector).first().innerText({ timeout: STEP_TIMEOUT })).trim();
}

/** Clicks a panel's button and waits until its result shows a finished call of `protocol`. */
async function runPanel(page, panel, protocol) {
  await page.click(tid(`run-${panel}`));
  await page.waitForSelector(`${tid(`result-${panel}`)}[data-state="done"][data-protocol="${protocol}"]`, {
    timeout: STEP_TIMEOUT,
  });
}

/** Checks the status, latency and bytes line of a finished panel. */
async function expectSummary(page, panel, status) {
  const shown = await text(page, tid(`status-${panel}`));
  expect(shown === status, `status shows "${shown}", expected "${status}"`);
  const latency = await text(page, tid(`latency-${panel}`));
  expect(/^\d+(\.\d)? ms$/.test(latency), `latency shows "${latency}"`);
  const bytes = await text(page, tid(`bytes-${panel}`));
  const m = /^↑ ([\d.]+) (B|KiB) · ↓ ([\d.]+) (B|KiB)$/.exec(bytes);
  expect(m !== null, `bytes show "${bytes}"`);
  const size = (n, unit) => Math.round(Number(n) * (unit === "KiB" ? 1024 : 1));
  return { sent: size(m[1], m[2]), received: size(m[3], m[4]) };
}

async function kv(page, id) {
  return (await text(page, tid(id))).replace(/\s+/g, " ");
}

async function exercise(page, p) {
  const at = (panel) => `${p.id} ${panel}`;

  await check(`${p.id} select`, async () => {
    await page.click(tid(`protocol-${p.id}`));
    await page.waitForSelector(`body[data-protocol="${p.id}"]`, { timeout: STEP_TIMEOUT });
    const checked = await page.getAttribute(tid(`protocol-${p.id}`), "aria-checked");
    expect(checked === "true", `the ${p.id} button is not checked`);
    const ct = await text(page, tid("protocol-content-type"));
    expect(p.unary.endsWith(ct), `protocol info shows content-type "${ct}"`);
  });

  await check(at("unary"), async () => {
    await page.fill(tid("input-unary-name"), "Ada");
    await runPanel(page, "unary", p.id);
    const { sent, received } = await expectSummary(page, "unary", "ok");
    expect(sent > 0 && received > 0, `bytes on the wire: ${sent} sent, ${received} received`);
    const wire = await text(page, tid("wire-unary"));
    expect(wire === `${p.unary} → HTTP 200`, `wire shows "${wire}", expected "${p.unary} → HTTP 200"`);
    const payload = JSON.parse(await text(page, tid("payload-unary")));
    expect(payload.greeting === "Hello, Ada!", `payload ${JSON.stringify(payload)}`);
  });

  await check(at("server stream"), async () => {
    await page.fill(tid("input-stream-from"), "5");
    await page.click(tid("run-stream"));
    // Messages show one by one: the first is on the page while the call is still running.
    await page.waitForSelector(`${tid("result-stream")}[data-state="running"][data-protocol="${p.id}"] ${tid("stream-message")}`, {
      timeout: STEP_TIMEOUT,
    });
    const early = await page.locator(tid("stream-message")).count();
    expect(early >= 1 && early < 5, `${early} messages shown while the stream was running`);
    await page.waitForSelector(`${tid("result-stream")}[data-state="done"][data-protocol="${p.id}"]`, { timeout: STEP_TIMEOUT });
    await expectSummary(page, "stream", "ok");
    const numbers = await page.locator(`${tid("stream-message")} .n`).allInnerTexts();
    expect(numbers.join(",") === "5,4,3,2,1", `stream messages ${numbers.join(",")}`);
    expect((await text(page, tid("stream-count"))) === "5 / 5", "the count does not show 5 / 5");
    const wire = await text(page, tid("wire-stream"));
    expect(wire.includes(` ${p.stream} → `), `wire shows "${wire}", expected "${p.stream}"`);
  });

  await check(at("error with details"), async () => {
    await page.fill(tid("input-error-name"), "");
    await runPanel(page, "error", p.id);
    await expectSummary(page, "error", "invalid_argument");
    const message = await text(page, tid("error-message-error"));
    expect(message === "name must not be empty", `error message "${message}"`);
    const details = (await text(page, tid("error-details-error"))).replace(/\s+/g, " ");
    expect(details.includes("google.rpc.BadRequest") && details.includes("name: must not be empty"), `details "${details}"`);
  });

  await check(at("metadata"), async () => {
    await page.fill(tid("input-metadata-key"), "user");
    await page.fill(tid("input-metadata-value"), `ada-${p.id}`);
    await runPanel(page, "metadata", p.id);
    await expectSummary(page, "metadata", "ok");
    const want = `x-demo-user ada-${p.id}`;
    for (const id of ["metadata-sent", "metadata-seen", "metadata-headers", "metadata-trailers"]) {
      const shown = await kv(page, id);
      expect(shown === want, `${id} shows "${shown}", expected "${want}"`);
    }
  });

  await check(at("deadline"), async () => {
    await page.fill(tid("input-deadline-sleep"), "2000");
    await page.fill(tid("input-deadline-timeout"), "300");
    await runPanel(page, "deadline", p.id);
    await expectSummary(page, "deadline", "deadline_exceeded");
    const timeout = await text(page, tid("timeout-deadline"));
    expect(timeout.startsWith(p.timeout), `deadline header "${timeout}", expected ${p.timeout}…`);
  });

  await check(at("chat (bidi over WebSocket)"), async () => {
    // Each answer is on the page before the next message goes: one call, both ways at once.
    const lines = ["Hello!", `from ${p.id}`, "bye"];
    for (const [i, line] of lines.entries()) {
      await page.fill(tid("input-chat-text"), line);
      await page.click(tid("run-chat"));
      await page.waitForFunction(
        ([sel, n]) => document.querySelectorAll(sel).length === n,
        [`${tid("result-chat")}[data-state="running"][data-protocol="${p.id}"] ${tid("chat-echo")}`, i + 1],
        { timeout: STEP_TIMEOUT },
      );
    }
    const echoes = await page.locator(`${tid("chat-echo")} .text`).allInnerTexts();
    expect(echoes.join("|") === lines.map((l) => `echo: ${l}`).join("|"), `echoes ${JSON.stringify(echoes)}`);
    await page.click(tid("end-chat"));
    await page.waitForSelector(`${tid("result-chat")}[data-state="done"][data-protocol="${p.id}"]`, { timeout: STEP_TIMEOUT });
    const { sent, received } = await expectSummary(page, "chat", "ok");
    expect(sent > 0 && received > 0, `bytes on the wire: ${sent} sent, ${received} received`);
    const wire = await text(page, tid("wire-chat"));
    expect(wire === "WebSocket grpc-websockets → HTTP 101", `wire shows "${wire}"`);
  });

  await check(at("upload (client stream over WebSocket)"), async () => {
    await page.fill(tid("input-upload-chunks"), "12");
    await page.fill(tid("input-upload-size"), "8");
    await page.click(tid("run-upload"));
    // The counter moves while the call is open.
    await page.waitForFunction(
      (sel) => {
        const el = document.querySelector(sel);
        const n = Number(el?.textContent?.split(" / ")[0]);
        return n > 0 && n < 12;
      },
      `${tid("result-upload")}[data-state="running"] ${tid("upload-count")}`,
      { timeout: STEP_TIMEOUT },
    );
    await page.waitForSelector(`${tid("result-upload")}[data-state="done"][data-protocol="${p.id}"]`, { timeout: STEP_TIMEOUT });
    await expectSummary(page, "upload", "ok");
    const payload = JSON.parse(await text(page, tid("payload-upload")));
    expect(payload.chunks === 12 && payload.bytes === String(12 * 8 * 1024), `payload ${JSON.stringify(payload)}`);
  });
}

const userDataDir = await mkdtemp(join(tmpdir(), "switchboard-chromium-"));
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
    ],
    viewport: { width: Number(args.width), height: 900 },
    deviceScaleFactor: 1,
    colorScheme: "light",
    reducedMotion: "reduce",
    timeout: 60_000,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // Failed calls are HTTP errors in Connect (400, 504…): Chromium logs those, and they are expected.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(`console: ${m.text()}`);
  });

  await check("page loads", async () => {
    const res = await page.goto(args.url, { waitUntil: "load", timeout: STEP_TIMEOUT });
    expect(res?.ok(), `GET ${args.url}: HTTP ${res?.status()}`);
    await page.waitForSelector('body[data-ready="true"]', { timeout: STEP_TIMEOUT });
    expect((await page.title()) === "Switchboard demo", `title "${await page.title()}"`);
  });

  for (const p of PROTOCOLS) await exercise(page, p);

  // The picture: Connect JSON with every panel run (the README's screenshot).
  await check("run all (connect-json)", async () => {
    await page.click(tid("protocol-connect-json"));
    await page.fill(tid("input-unary-name"), "Ada");
    await page.fill(tid("input-metadata-value"), "ada");
    await page.fill(tid("input-deadline-timeout"), "500");
    await page.click(tid("run-all"));
    await page.fill(tid("input-upload-chunks"), "20");
    await page.fill(tid("input-upload-size"), "16");
    for (const panel of ["unary", "stream", "error", "metadata", "deadline", "upload"]) {
      await page.waitForSelector(`${tid(`result-${panel}`)}[data-state="done"][data-protocol="connect-json"]`, { timeout: STEP_TIMEOUT });
    }
    await page.waitForSelector(`${tid("run-all")}:not([disabled])`, { timeout: STEP_TIMEOUT });
    // And a chat left open, for the picture.
    for (const [i, line] of ["Hello!", "Anyone there?"].entries()) {
      await page.fill(tid("input-chat-text"), line);
      await page.click(tid("run-chat"));
      await page.waitForFunction(
        ([sel, n]) => document.querySelectorAll(sel).length === n,
        [`${tid("result-chat")} ${tid("chat-echo")}`, i + 1],
        { timeout: STEP_TIMEOUT },
      );
    }
  });
  if (args.screenshot) {
    await page.screenshot({ path: args.screenshot, fullPage: true });
    console.log(`screenshot: ${args.screenshot}`);
  }

  await check("phone width (375 px): no horizontal scrolling", async () => {
    await page.setViewportSize({ width: 375, height: 812 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    expect(overflow <= 0, `the page is ${overflow} px wider than the screen`);
  });
  if (args["mobile-screenshot"]) {
    await page.screenshot({ path: args["mobile-screenshot"], fullPage: true });
    console.log(`screenshot: ${args["mobile-screenshot"]}`);
  }

  await check("no page errors", async () => {
    expect(pageErrors.length === 0, pageErrors.join("\n"));
  });
} catch (e) {
  failures++;
  console.log(`FAIL browser: ${e?.stack ?? e}`);
} finally {
  await context?.close().catch(() => {});
  await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
}

console.log(`${passes} passed, ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
