// The interop matrix's improbable-ws row, in Chromium: the real @improbable-eng/grpc-web
// browser build (its UMD bundle from tests/interop/node_modules) with grpc.WebsocketTransport(),
// i.e. the browser's own WebSocket, against one proxy. Prints CELL lines like matrix.mjs, with
// the client named "improbable-ws/chromium"; tests/integration/matrix.rs runs it per backend.
//
//   node tests/browser/improbable.mjs --url http://127.0.0.1:PORT
//
// The page builds EchoRequest bytes and reads EchoResponse bytes with a few lines of protobuf
// wire code (the test service's messages are small and fixed), so it needs no bundler.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: args } = parseArgs({ options: { url: { type: "string" } } });
if (!args.url) {
  console.error("usage: improbable.mjs --url http://127.0.0.1:PORT");
  process.exit(2);
}
const HERE = dirname(fileURLToPath(import.meta.url));
const UMD = join(HERE, "..", "interop", "node_modules", "@improbable-eng", "grpc-web", "dist", "grpc-web-client.umd.js");
const CLIENT = "improbable-ws/chromium";
const CALLS = ["unary", "server-stream", "client-stream", "bidi", "error-details", "metadata", "deadline"];
const CELL_TIMEOUT_MS = 15_000;

/** Runs in the page: every cell, returning [call, error message or null, ms]. */
async function runCells({ calls, service, cellTimeout }) {
  const { grpc } = window;
  // --- protobuf wire, just enough for EchoRequest / EchoResponse / google.rpc.Status ---
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  const varint = (out, n) => {
    while (n > 127) {
      out.push((n & 127) | 128);
      n >>>= 7;
    }
    out.push(n);
  };
  const field = (out, no, type, value) => {
    varint(out, (no << 3) | type);
    if (type === 0) varint(out, value);
    else {
      varint(out, value.length);
      out.push(...value);
    }
  };
  const encodeRequest = (r) => {
    const out = [];
    if (r.message) field(out, 1, 2, enc.encode(r.message));
    if (r.payload?.length) field(out, 2, 2, r.payload);
    if (r.delayMs) field(out, 4, 0, r.delayMs);
    if (r.count) field(out, 5, 0, r.count);
    if (r.error) {
      const e = [];
      field(e, 1, 0, r.error.code);
      field(e, 2, 2, enc.encode(r.error.message));
      if (r.error.withDetails) field(e, 3, 0, 1);
      field(out, 6, 2, e);
    }
    return new Uint8Array(out);
  };
  const parse = (bytes) => {
    const fields = [];
    let i = 0;
    const readVarint = () => {
      let n = 0;
      let shift = 0;
      for (;;) {
        const b = bytes[i++];
        n += (b & 127) * 2 ** shift;
        shift += 7;
        if (b < 128) return n;
      }
    };
    while (i < bytes.length) {
      const key = readVarint();
      const [no, type] = [key >>> 3, key & 7];
      if (type === 0) fields.push([no, readVarint()]);
      else if (type === 2) {
        const len = readVarint();
        fields.push([no, bytes.subarray(i, i + len)]);
        i += len;
      } else throw new Error(`wire type ${type}`);
    }
    return fields;
  };
  const decodeResponse = (bytes) => {
    const r = { message: "", payload: [], index: 0, metadata: {} };
    for (const [no, v] of parse(bytes)) {
      if (no === 1) r.message = dec.decode(v);
      if (no === 2) r.payload = Array.from(v);
      if (no === 3) r.index = v;
      if (no === 5) {
        const entry = Object.fromEntries(parse(v).map(([n, x]) => [n, dec.decode(x)]));
        r.metadata[entry[1]] = entry[2];
      }
    }
    return r;
  };
  // --- the improbable client ---
  const definition = (method) => {
    class Req {
      constructor(fields) {
        this.fields = fields;
      }
      serializeBinary() {
        return encodeRequest(this.fields);
      }
      toObject() {
        return this.fields;
      }
    }
    class Res {
      constructor(value) {
        this.value = value;
      }
      toObject() {
        return this.value;
      }
      static deserializeBinary(bytes) {
        return new Res(decodeResponse(bytes));
      }
    }
    return {
      def: {
        methodName: method,
        service: { serviceName: service },
        requestStream: method === "ClientStream" || method === "Bidi",
        responseStream: method === "ServerStream" || method === "Bidi",
        requestType: Req,
        responseType: Res,
      },
      Req,
    };
  };
  const call = (method, requests, metadata = {}, conversation = false) =>
    new Promise((resolve) => {
      const { def, Req } = definition(method);
      const out = { messages: [] };
      const client = grpc.client(def, { host: location.origin, transport: grpc.WebsocketTransport() });
      let next = 0;
      const sendNext = () => {
        if (next < requests.length) client.send(new Req(requests[next++]));
        if (next === requests.length) {
          next++;
          client.finishSend();
        }
      };
      client.onHeaders((h) => (out.headers = h));
      client.onMessage((m) => {
        out.messages.push(m.value);
        if (conversation) sendNext();
      });
      client.onEnd((code, message, trailers) => resolve(Object.assign(out, { code, message, trailers })));
      client.start(new grpc.Metadata(metadata));
      if (conversation) sendNext();
      else while (next <= requests.length) sendNext();
    });
  const check = (cond, what) => {
    if (!cond) throw new Error(what);
  };
  const eq = (got, want, what) => check(JSON.stringify(got) === JSON.stringify(want), `${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  const ok = (r) => check(r.code === grpc.Code.OK, `call failed: ${grpc.Code[r.code]}: ${JSON.stringify(r.message)}`);
  const cells = {
    async unary() {
      const r = await call("Unary", [{ message: "hello", payload: [0, 1, 254, 255] }]);
      ok(r);
      eq(r.messages.map((m) => [m.message, m.payload]), [["hello", [0, 1, 254, 255]]], "message");
    },
    async "server-stream"() {
      const r = await call("ServerStream", [{ message: "s", count: 3 }]);
      ok(r);
      eq(r.messages.map((m) => [m.message, m.index]), [["s", 0], ["s", 1], ["s", 2]], "stream");
    },
    async "client-stream"() {
      const r = await call("ClientStream", [{ message: "a", payload: [1, 2] }, { message: "b" }, { message: "c", payload: [3] }]);
      ok(r);
      eq(r.messages.map((m) => [m.message, m.payload]), [["a,b,c", [1, 2, 3]]], "joined");
    },
    async bidi() {
      const requests = ["b0", "b1", "b2", "b3"].map((message) => ({ message }));
      const r = await call("Bidi", requests, { "x-header-h": "bidi" }, true);
      ok(r);
      eq(r.messages.map((m) => [m.message, m.index]), requests.map((q, i) => [q.message, i]), "answers");
      eq(r.headers?.get("x-header-h"), ["bidi"], "response header");
    },
    async "error-details"() {
      const r = await call("Unary", [{ message: "x", error: { code: 3, message: "bad input", withDetails: true } }]);
      eq(grpc.Code[r.code], "InvalidArgument", "code");
      eq(r.message, "bad input", "message");
      const bin = r.trailers?.get("grpc-status-details-bin")[0];
      check(bin, "no grpc-status-details-bin trailer");
      const raw = Uint8Array.from(atob(bin.padEnd(Math.ceil(bin.length / 4) * 4, "=")), (c) => c.charCodeAt(0));
      const status = Object.fromEntries(parse(raw).filter(([n]) => n < 3));
      eq([status[1], dec.decode(status[2])], [3, "bad input"], "google.rpc.Status code and message");
      const details = parse(raw).filter(([n]) => n === 3).map(([, any]) => dec.decode(parse(any)[0][1]));
      eq(details, ["type.googleapis.com/google.rpc.BadRequest"], "detail types");
    },
    async metadata() {
      const r = await call("Unary", [{ message: "meta" }], { "x-header-a": "alpha", "x-trailer-b": "beta" });
      ok(r);
      eq(r.messages[0]?.metadata["x-header-a"], "alpha", "backend saw x-header-a");
      eq(r.headers?.get("x-header-a"), ["alpha"], "response header");
      eq(r.trailers?.get("x-trailer-b"), ["beta"], "trailer");
    },
    async deadline() {
      const r = await call("Unary", [{ message: "slow", delayMs: 3000 }], { "grpc-timeout": "200m" });
      eq(grpc.Code[r.code], "DeadlineExceeded", `code (message ${JSON.stringify(r.message)})`);
    },
  };
  const results = [];
  for (const name of calls) {
    const start = performance.now();
    let error = null;
    try {
      await Promise.race([
        cells[name](),
        new Promise((_, reject) => setTimeout(() => reject(new Error(`no result within ${cellTimeout} ms`)), cellTimeout)),
      ]);
    } catch (e) {
      error = String(e?.message ?? e);
    }
    results.push([name, error, Math.round(performance.now() - start)]);
  }
  return results;
}

let failed = 0;
const userDataDir = await mkdtemp(join(tmpdir(), "switchboard-chromium-"));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
    timeout: 60_000,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  // A page of the proxy's origin (any path): the sockets go to the same origin.
  await page.goto(`${args.url}/`, { timeout: CELL_TIMEOUT_MS });
  await page.addScriptTag({ path: UMD });
  const results = await page.evaluate(runCells, {
    calls: CALLS,
    service: "switchboard.testing.v1.TestService",
    cellTimeout: CELL_TIMEOUT_MS,
  });
  for (const [call, error, ms] of results) {
    if (error === null) console.log(`CELL ${CLIENT} ${call} PASS (${ms} ms)`);
    else {
      failed++;
      console.log(`CELL ${CLIENT} ${call} FAIL ${error.replace(/\s+/g, " ")}`);
    }
  }
} catch (e) {
  failed++;
  console.error(`browser: ${e?.stack ?? e}`);
} finally {
  await context?.close().catch(() => {});
  await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
}
process.exit(failed === 0 ? 0 : 1);
