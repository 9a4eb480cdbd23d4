// Cross-site requests from a real browser: headless Chromium (the Debian `chromium` package)
// opens a page on another site and calls the proxy from it the ways a page can: an <img>, a
// no-cors fetch with cookies (GET and a form-like POST), a CORS Connect GET and a CORS gRPC-Web
// POST. The browser sets Sec-Fetch-Site and Origin itself. Prints one JSON line: what each
// attempt saw, per page. tests/integration/security/browser.rs asserts on it and on what
// reached the backend.
//
//   node tests/browser/cross_site.mjs --proxy http://127.0.0.1:P --page http://127.0.0.2:Q/ \
//        [--page ...] --get "/pkg.Svc/Method?connect=v1&..." --unary /pkg.Svc/Method --web-body BASE64

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: args } = parseArgs({
  options: {
    proxy: { type: "string" },
    page: { type: "string", multiple: true },
    get: { type: "string" },
    unary: { type: "string" },
    "web-body": { type: "string" },
  },
});
if (!args.proxy || !args.page || !args.get || !args.unary || !args["web-body"]) {
  console.error("usage: cross_site.mjs --proxy URL --page URL... --get PATH --unary PATH --web-body BASE64");
  process.exit(2);
}

/** Runs in the page: every way of calling the proxy, and what the page could tell of each. */
async function attempts({ proxy, get, unary, webBody }) {
  const out = {};
  const settle = async (name, fn) => {
    try {
      out[name] = await fn();
    } catch (e) {
      out[name] = `rejected: ${e?.name ?? e}`;
    }
  };
  await settle("img", () =>
    new Promise((resolve) => {
      const img = new Image();
      img.onload = () => resolve("load");
      img.onerror = () => resolve("error");
      img.src = proxy + get;
    }),
  );
  await settle("noCorsGet", async () => (await fetch(proxy + get, { mode: "no-cors", credentials: "include" })).type);
  await settle("noCorsPost", async () =>
    (
      await fetch(proxy + unary, {
        method: "POST",
        mode: "no-cors",
        credentials: "include",
        headers: { "content-type": "text/plain" },
        body: "not a call",
      })
    ).type,
  );
  await settle("corsGet", async () => {
    const r = await fetch(proxy + get, { credentials: "include" });
    return r.status;
  });
  await settle("corsPost", async () => {
    const body = Uint8Array.from(atob(webBody), (c) => c.charCodeAt(0));
    const r = await fetch(proxy + unary, {
      method: "POST",
      credentials: "include",
      headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
      body,
    });
    // The status is in the trailer frame at the end of the body.
    const text = new TextDecoder().decode(await r.arrayBuffer());
    return `${r.status} ${/grpc-status: ?(\d+)/.exec(text)?.[0] ?? "no grpc-status"}`;
  });
  return out;
}

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const userDataDir = await mkdtemp(join(tmpdir(), "switchboard-cross-site-"));
let context;
let code = 0;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
  });
  const page = await context.newPage();
  const results = {};
  for (const url of args.page) {
    await page.goto(url, { timeout: 15_000 });
    results[new URL(url).origin] = await page.evaluate(attempts, {
      proxy: args.proxy,
      get: args.get,
      unary: args.unary,
      webBody: args["web-body"],
    });
  }
  console.log(JSON.stringify(results));
} catch (e) {
  console.error(`cross_site.mjs: ${e?.stack ?? e}`);
  code = 1;
} finally {
  await context?.close();
  await rm(userDataDir, { recursive: true, force: true });
}
process.exit(code);
