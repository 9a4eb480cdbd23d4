#!/usr/bin/env node
// Drives @connectrpc/connect-node clients against a Switchboard proxy that fronts the test
// backend (proto/switchboard/testing/v1/testing.proto), one PASS/FAIL line per case.
//
//   node tests/interop/clients.mjs --url http://127.0.0.1:PORT --descriptor testing_descriptor.bin
//   node tests/interop/clients.mjs --list                 # names of every case
//   ... --only grpc-web/http2 --only "unary echo"          # run cases whose name contains any
//   ... --json --only json-                                # the JSON transports (see below)
//
// Exit status: 0 when every case passed, 1 when any failed, 2 on bad usage.
// The service schema is read at run time from the descriptor set that build.rs writes, so
// nothing here is generated code.
//
// The JSON transports (names starting with "json-": Connect JSON, Connect GET with JSON and
// gRPC-Web JSON) only run with --json: the test backend speaks protobuf only, so they need a
// proxy that transcodes, i.e. one configured with descriptors or server reflection.

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import {
  check,
  checkEq,
  BadRequestSchema,
  CheckError,
  getService,
  loadRegistry,
  parseCommonArgs,
  runCases,
} from "./lib.mjs";

// Every transport the cases run over. Adding a protocol or codec is one entry here.
//   name:      prefix of each case name
//   create:    baseUrl -> Transport
//   streaming: which streaming shapes the transport can carry besides server streaming
//   deadline:  the header (name, value) that asks for a 200 ms deadline without a client timer
//   only:      when set, the names of the only cases this transport runs
//   json:      a JSON transport, run only with --json
const GRPC_WEB_DEADLINE = ["grpc-timeout", "200m"];
const CONNECT_DEADLINE = ["connect-timeout-ms", "200"];
const TRANSPORTS = [
  {
    name: "grpc-web/http1.1",
    create: (baseUrl) =>
      createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true }),
    // Client streaming is a chunked request body; bidi needs HTTP/2.
    streaming: { client: true, bidi: false },
    deadline: GRPC_WEB_DEADLINE,
  },
  {
    name: "grpc-web/http2",
    create: (baseUrl) =>
      createGrpcWebTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true }),
    streaming: { client: true, bidi: true },
    deadline: GRPC_WEB_DEADLINE,
  },
  {
    name: "connect/http1.1",
    create: (baseUrl) =>
      createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true }),
    streaming: { client: true, bidi: false },
    deadline: CONNECT_DEADLINE,
  },
  {
    name: "connect/http2",
    create: (baseUrl) =>
      createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true }),
    streaming: { client: true, bidi: true },
    deadline: CONNECT_DEADLINE,
  },
  {
    // Methods without side effects (Lookup) travel as GET requests.
    name: "connect-get/http1.1",
    create: (baseUrl) =>
      createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true, useHttpGet: true }),
    streaming: { client: false, bidi: false },
    deadline: CONNECT_DEADLINE,
    only: ["lookup", "lookup error with details", "lookup deadline exceeded"],
  },
  {
    name: "connect-get/http2",
    create: (baseUrl) =>
      createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true, useHttpGet: true }),
    streaming: { client: false, bidi: false },
    deadline: CONNECT_DEADLINE,
    only: ["lookup", "lookup error with details", "lookup deadline exceeded"],
  },
  // JSON (ProtoJSON) transports: the proxy transcodes to and from protobuf.
  {
    name: "json-grpc-web/http1.1",
    create: (baseUrl) =>
      createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
    streaming: { client: true, bidi: false },
    deadline: GRPC_WEB_DEADLINE,
    json: true,
  },
  {
    name: "json-grpc-web/http2",
    create: (baseUrl) =>
      createGrpcWebTransport({ baseUrl, httpVersion: "2", useBinaryFormat: false }),
    streaming: { client: true, bidi: true },
    deadline: GRPC_WEB_DEADLINE,
    json: true,
  },
  {
    name: "json-connect/http1.1",
    create: (baseUrl) =>
      createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
    streaming: { client: true, bidi: false },
    deadline: CONNECT_DEADLINE,
    json: true,
  },
  {
    name: "json-connect/http2",
    create: (baseUrl) =>
      createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: false }),
    streaming: { client: true, bidi: true },
    deadline: CONNECT_DEADLINE,
    json: true,
  },
  {
    // GET with encoding=json: the message travels as JSON in the query.
    name: "json-connect-get/http1.1",
    create: (baseUrl) =>
      createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false, useHttpGet: true }),
    streaming: { client: false, bidi: false },
    deadline: CONNECT_DEADLINE,
    only: ["lookup", "lookup error with details", "lookup deadline exceeded"],
    json: true,
  },
  {
    name: "json-connect-get/http2",
    create: (baseUrl) =>
      createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: false, useHttpGet: true }),
    streaming: { client: false, bidi: false },
    deadline: CONNECT_DEADLINE,
    only: ["lookup", "lookup error with details", "lookup deadline exceeded"],
    json: true,
  },
];

const UNICODE_MESSAGE = "café 100% 😈";

// Every case: { name, needs?: "client" | "bidi", run(client, signal) }.
const CASES = [
  {
    name: "unary echo",
    async run(client, signal) {
      const payload = new Uint8Array([0, 1, 2, 253, 254, 255]);
      const res = await client.unary({ message: "hello", payload }, { signal });
      checkEq(res.message, "hello", "message");
      checkEq(Array.from(res.payload), Array.from(payload), "payload");
      checkEq(res.index, 0, "index");
    },
  },
  {
    name: "unary large messages (256 KiB up, 1 MiB down)",
    async run(client, signal) {
      const up = new Uint8Array(256 * 1024).map((_, i) => (i * 7) & 0xff);
      const echoed = await client.unary({ message: "big", payload: up }, { signal });
      check(echoed.payload.length === up.length, `echoed ${echoed.payload.length} bytes, sent ${up.length}`);
      check(Buffer.compare(Buffer.from(echoed.payload), Buffer.from(up)) === 0, "echoed payload differs");
      const down = await client.unary({ message: "big", responseSize: 1 << 20 }, { signal });
      checkEq(down.payload.length, 1 << 20, "response payload size");
      check(down.payload.every((b) => b === 0x78), "response payload is not all 'x'");
    },
  },
  {
    name: "server stream of 3 in order",
    async run(client, signal) {
      const got = [];
      for await (const res of client.serverStream({ message: "s", count: 3 }, { signal })) {
        got.push([res.message, res.index]);
      }
      checkEq(got, [["s", 0], ["s", 1], ["s", 2]], "stream");
    },
  },
  {
    name: "error with details",
    async run(client, signal) {
      const err = await expectError(
        client.unary(
          { message: "x", error: { code: Code.InvalidArgument, message: "bad input", withDetails: true } },
          { signal },
        ),
      );
      checkEq(Code[err.code], "InvalidArgument", "code");
      checkEq(err.rawMessage, "bad input", "message");
      checkEq(err.details.length, 1, "number of details");
      const d = err.details[0];
      const typeName = "type" in d ? d.type : d.desc?.typeName;
      checkEq(typeName, "google.rpc.BadRequest", "detail type");
      const [badRequest] = err.findDetails(BadRequestSchema);
      check(badRequest !== undefined, "the detail does not decode as google.rpc.BadRequest");
      check(
        badRequest.fieldViolations.length > 0 && badRequest.fieldViolations[0].field !== "",
        `BadRequest without a field violation: ${JSON.stringify(badRequest)}`,
      );
    },
  },
  {
    name: "error without details",
    async run(client, signal) {
      const err = await expectError(
        client.unary({ error: { code: Code.NotFound, message: "no such thing" } }, { signal }),
      );
      checkEq(Code[err.code], "NotFound", "code");
      checkEq(err.rawMessage, "no such thing", "message");
      checkEq(err.details.length, 0, "number of details");
    },
  },
  {
    name: "header and trailer metadata",
    async run(client, signal) {
      let headers;
      let trailers;
      const res = await client.unary(
        { message: "meta" },
        {
          signal,
          headers: { "x-header-a": "alpha", "x-trailer-b": "beta" },
          onHeader: (h) => (headers = h),
          onTrailer: (t) => (trailers = t),
        },
      );
      checkEq(res.metadata["x-header-a"], "alpha", "backend saw request header x-header-a");
      check(headers !== undefined, "onHeader was not called");
      check(trailers !== undefined, "onTrailer was not called");
      checkEq(headers.get("x-header-a"), "alpha", "response header x-header-a");
      checkEq(trailers.get("x-trailer-b"), "beta", "response trailer x-trailer-b");
      checkEq(headers.get("x-trailer-b"), null, "x-trailer-b among the response headers");
    },
  },
  {
    name: "deadline propagated as grpc-timeout",
    async run(client, signal) {
      const res = await client.unary({ message: "t" }, { signal, timeoutMs: 10_000 });
      const ms = grpcTimeoutMs(res.grpcTimeout);
      check(ms !== undefined, `backend saw grpc-timeout ${JSON.stringify(res.grpcTimeout)}`);
      check(ms > 0 && ms <= 10_000, `backend saw grpc-timeout ${res.grpcTimeout} (${ms} ms), want 0 < t <= 10s`);
    },
  },
  {
    name: "deadline exceeded",
    async run(client, signal) {
      const started = performance.now();
      const err = await expectError(
        client.unary({ message: "slow", delayMs: 3000 }, { signal, timeoutMs: 200 }),
      );
      const elapsed = performance.now() - started;
      checkEq(Code[err.code], "DeadlineExceeded", "code");
      check(elapsed < 2500, `took ${Math.round(elapsed)} ms, want well under the 3000 ms delay`);
    },
  },
  {
    name: "lookup",
    async run(client, signal, transport) {
      let headers;
      const res = await client.lookup({ message: "cacheable" }, { signal, onHeader: (h) => (headers = h) });
      checkEq(res.message, "cacheable", "message");
      if (transport.name.startsWith("connect-get") || transport.name.startsWith("json-connect-get")) {
        // Only GET responses vary by accept-encoding: proof that the call really was a GET.
        check((headers?.get("vary") ?? "").includes("accept-encoding"), `vary: ${headers?.get("vary")}`);
      }
    },
  },
  {
    name: "lookup error with details",
    async run(client, signal) {
      const err = await expectError(
        client.lookup(
          { error: { code: Code.NotFound, message: "no such key", withDetails: true } },
          { signal },
        ),
      );
      checkEq(Code[err.code], "NotFound", "code");
      checkEq(err.rawMessage, "no such key", "message");
      checkEq(err.findDetails(BadRequestSchema).length, 1, "BadRequest details");
    },
  },
  {
    name: "lookup deadline exceeded",
    async run(client, signal) {
      const err = await expectError(
        client.lookup({ message: "slow", delayMs: 3000 }, { signal, timeoutMs: 200 }),
      );
      checkEq(Code[err.code], "DeadlineExceeded", "code");
    },
  },
  {
    name: "deadline enforced by the proxy",
    async run(client, signal, transport) {
      // Only the deadline header, no client-side timer: the test backend does not enforce
      // deadlines, so DEADLINE_EXCEEDED in time can only come from the proxy.
      const [name, value] = transport.deadline;
      const started = performance.now();
      const err = await expectError(
        client.unary({ message: "slow", delayMs: 3000 }, { signal, headers: { [name]: value } }),
      );
      const elapsed = performance.now() - started;
      checkEq(Code[err.code], "DeadlineExceeded", "code");
      check(elapsed < 2500, `took ${Math.round(elapsed)} ms, want well under the 3000 ms delay`);
    },
  },
  {
    name: "unicode error message round trip",
    async run(client, signal) {
      const err = await expectError(
        client.unary({ error: { code: Code.FailedPrecondition, message: UNICODE_MESSAGE } }, { signal }),
      );
      checkEq(Code[err.code], "FailedPrecondition", "code");
      checkEq(err.rawMessage, UNICODE_MESSAGE, "message");
    },
  },
  {
    name: "error after 2 stream messages",
    async run(client, signal) {
      const got = [];
      let err;
      try {
        const req = { message: "e", count: 2, error: { code: Code.Aborted, message: "stream broke" } };
        for await (const res of client.serverStream(req, { signal })) {
          got.push(res.index);
        }
      } catch (e) {
        err = ConnectError.from(e);
      }
      checkEq(got, [0, 1], "messages before the error");
      check(err !== undefined, "stream ended without an error");
      checkEq(Code[err.code], "Aborted", "code");
      checkEq(err.rawMessage, "stream broke", "message");
    },
  },
  {
    name: "client stream",
    needs: "client",
    async run(client, signal) {
      async function* requests() {
        for (const message of ["a", "b", "c"]) yield { message, payload: new TextEncoder().encode(message) };
      }
      const res = await client.clientStream(requests(), { signal });
      checkEq(res.message, "a,b,c", "joined messages");
      checkEq(new TextDecoder().decode(res.payload), "abc", "concatenated payloads");
    },
  },
  {
    name: "bidi ping-pong (full duplex)",
    needs: "bidi",
    async run(client, signal) {
      // Sends message i+1 only after the echo of message i arrived: a proxy that waits for
      // the whole request body before answering makes this time out.
      const n = 3;
      const got = [];
      let wake = () => {};
      async function* requests() {
        for (let i = 0; i < n; i++) {
          yield { message: `m${i}` };
          await new Promise((resolve) => {
            wake = resolve;
            if (got.length > i) resolve();
          });
        }
      }
      for await (const res of client.bidi(requests(), { signal })) {
        got.push(res.message);
        wake();
      }
      checkEq(got, ["m0", "m1", "m2"], "echoes");
    },
  },
];

/** Awaits a call that must fail and returns its ConnectError. */
async function expectError(promise) {
  try {
    const res = await promise;
    throw new CheckError(`expected an error, got a response ${JSON.stringify(res)}`);
  } catch (e) {
    if (e instanceof CheckError) throw e;
    return ConnectError.from(e);
  }
}

/** grpc-timeout value ("123m") to milliseconds; undefined when malformed. */
function grpcTimeoutMs(value) {
  const m = /^(\d{1,8})([HMSmun])$/.exec(value ?? "");
  if (!m) return undefined;
  const unit = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 }[m[2]];
  return Number(m[1]) * unit;
}

function allCases(service, baseUrl, { json = false } = {}) {
  const out = [];
  for (const t of TRANSPORTS) {
    if (t.json && !json) continue;
    let client;
    const get = () => (client ??= createClient(service, t.create(baseUrl)));
    for (const c of CASES) {
      if (c.needs && !t.streaming[c.needs]) continue;
      if (t.only && !t.only.includes(c.name)) continue;
      out.push({ name: `${t.name}: ${c.name}`, run: (signal) => c.run(get(), signal, t) });
    }
  }
  return out;
}

const USAGE = `usage: node clients.mjs --url BASE_URL --descriptor FILE [--json] [--only TEXT]... | [--json] --list
  --json   also run the JSON transports (names starting with "json-"); the proxy must transcode`;

async function main() {
  const args = parseCommonArgs(USAGE, { json: { type: "boolean" } });
  const service = args.list ? undefined : getService(loadRegistry(args.descriptor));
  let cases = allCases(service, args.url, { json: args.json === true });
  if (args.only) cases = cases.filter((c) => args.only.some((o) => c.name.includes(o)));
  if (args.list) {
    for (const c of cases) console.log(c.name);
    return 0;
  }
  if (cases.length === 0) {
    console.error("no case matches --only");
    return 2;
  }
  console.log(`connect-node clients against ${args.url}`);
  const failed = await runCases(cases, { label: "connect-node" });
  return failed === 0 ? 0 : 1;
}

// Exit explicitly: idle HTTP/2 sessions would otherwise keep the process alive.
main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
