#!/usr/bin/env node
// The interop matrix, one proxy at a time: every client × call type against a Switchboard
// proxy in front of one test backend (tonic, grpc-js or grpcio; tests/integration/matrix.rs
// starts them). Prints one machine-readable line per cell:
//
//   CELL <client> <call> PASS (<ms> ms[; <caveat>])[ <what happened, e.g. the error message>]
//   CELL <client> <call> FAIL <reason>
//
//   node tests/interop/matrix.mjs --url http://127.0.0.1:PORT --descriptor testing_descriptor.bin
//   node tests/interop/matrix.mjs --list                  # client and call of every cell
//   ... --only grpc-web --only "buf-curl deadline"         # cells whose "client call" contains any
//
// Clients (all over HTTP/1.1, as a browser page would call):
//   connect-node/connect   @connectrpc/connect-node, Connect protocol, protobuf binary
//   connect-node/grpc-web  @connectrpc/connect-node, gRPC-Web, protobuf binary
//   grpc-web               Google's grpc-web (GrpcWebClientBase, grpcwebtext) over xhr2
//   improbable             @improbable-eng/grpc-web with its Node HTTP transport
//   improbable-ws          @improbable-eng/grpc-web with its WebSocket transport (grpc-websockets;
//                          the WebSocket is the `ws` package's), every call type
//   buf-curl               buf curl --protocol grpcweb
// Call types: unary, server-stream, client-stream, bidi, error-details, metadata, deadline; a
// client without a way to make a call type (client streams over HTTP/1.1) has no such cell.
//
// No generated code: every client is handed serializers over the messages of the descriptor
// set that build.rs writes. Exit status: 0 when every cell passed, 1 when any failed, 2 on bad
// usage.

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import {
  BadRequestSchema,
  check,
  checkEq,
  CheckError,
  decodeStatusDetailsBin,
  describeError,
  getService,
  loadRegistry,
  parseCommonArgs,
  SERVICE,
  TEST_BAD_REQUEST,
} from "./lib.mjs";

const require = createRequire(import.meta.url);
// CommonJS packages, loaded the way their READMEs show.
const grpcWeb = require("grpc-web");
const { grpc: improbable } = require("@improbable-eng/grpc-web");
const { NodeHttpTransport } = require("@improbable-eng/grpc-web-node-http-transport");
// The improbable WebSocket transport opens `new WebSocket(url, ["grpc-websockets"])`, as in a
// browser; in Node that is the `ws` package's.
globalThis.WebSocket = require("ws");
// Google's grpc-web calls through XMLHttpRequest, which Node does not have: xhr2's, recording
// the content type of each response, so the grpc-web cells can check they got the text format.
let lastXhrContentType;
globalThis.XMLHttpRequest = class extends require("xhr2") {
  getResponseHeader(name) {
    const value = super.getResponseHeader(name);
    if (name.toLowerCase() === "content-type") lastXhrContentType = value;
    return value;
  }
};

const HERE = dirname(fileURLToPath(import.meta.url));
const BUF = join(HERE, "node_modules", ".bin", "buf");
const BUF_CACHE_DIR = join(HERE, ".cache", "buf");

/** How long one cell may take: a hang guard, not a timing assertion. */
const CELL_TIMEOUT_MS = 15_000;

// What every call type sends and expects; the same for all clients.
const ERROR = { code: Code.InvalidArgument, message: "bad input", withDetails: true };
const SLOW = { message: "slow", delayMs: 3000 };
const DEADLINE_MS = 200;
const BUF_DEADLINE_MS = 1000;
const META_IN = { "x-header-a": "alpha", "x-trailer-b": "beta" };

const CALLS = ["unary", "server-stream", "client-stream", "bidi", "error-details", "metadata", "deadline"];

// ---- connect-node (Connect and gRPC-Web transports) ----------------------------------------

function connectNodeClient(name, makeTransport) {
  let client;
  const get = (ctx) => (client ??= createClient(ctx.service, makeTransport(ctx.url)));
  return {
    name,
    calls: {
      async unary(ctx, signal) {
        const payload = new Uint8Array([0, 1, 2, 253, 254, 255]);
        const res = await get(ctx).unary({ message: "hello", payload }, { signal });
        checkEq(res.message, "hello", "message");
        checkEq(Array.from(res.payload), Array.from(payload), "payload");
      },
      async "server-stream"(ctx, signal) {
        const got = [];
        for await (const res of get(ctx).serverStream({ message: "s", count: 3 }, { signal })) {
          got.push([res.message, res.index]);
        }
        checkEq(got, [["s", 0], ["s", 1], ["s", 2]], "stream");
      },
      async "error-details"(ctx, signal) {
        const err = await expectConnectError(get(ctx).unary({ message: "x", error: ERROR }, { signal }));
        checkEq(Code[err.code], "InvalidArgument", "code");
        checkEq(err.rawMessage, "bad input", "message");
        checkBadRequests(err.findDetails(BadRequestSchema), "details");
      },
      async metadata(ctx, signal) {
        let headers;
        let trailers;
        const res = await get(ctx).unary(
          { message: "meta" },
          { signal, headers: META_IN, onHeader: (h) => (headers = h), onTrailer: (t) => (trailers = t) },
        );
        checkEq(res.metadata["x-header-a"], "alpha", "backend saw request header x-header-a");
        checkEq(headers?.get("x-header-a"), "alpha", "response header x-header-a");
        checkEq(trailers?.get("x-trailer-b"), "beta", "response trailer x-trailer-b");
      },
      async deadline(ctx, signal) {
        const err = await expectConnectError(get(ctx).unary(SLOW, { signal, timeoutMs: DEADLINE_MS }));
        checkEq(Code[err.code], "DeadlineExceeded", "code");
        return { info: `message ${JSON.stringify(err.rawMessage)}` };
      },
    },
  };
}

async function expectConnectError(promise) {
  try {
    const res = await promise;
    throw new CheckError(`expected an error, got a response ${JSON.stringify(res)}`);
  } catch (e) {
    if (e instanceof CheckError) throw e;
    return ConnectError.from(e);
  }
}

// ---- Google grpc-web (grpcwebtext) ----------------------------------------------------------

/**
 * One call with GrpcWebClientBase. Resolves to { error, messages, headers, status } once the
 * call is over; `error` is the RpcError, if any (grpc-web reports it instead of "end").
 */
function grpcWebCall(ctx, method, request, metadata, signal) {
  const client = new grpcWeb.GrpcWebClientBase({ format: "text" });
  const streaming = method === "ServerStream";
  const descriptor = new grpcWeb.MethodDescriptor(
    `/${SERVICE}/${method}`,
    streaming ? grpcWeb.MethodType.SERVER_STREAMING : grpcWeb.MethodType.UNARY,
    Object, // request "class": unused, the serializer below does the work
    Object,
    (req) => toBinary(ctx.EchoRequest, create(ctx.EchoRequest, req)),
    (bytes) => fromBinary(ctx.EchoResponse, bytes),
  );
  const url = `${ctx.url}/${SERVICE}/${method}`;
  return new Promise((resolve) => {
    const out = { error: undefined, messages: [], headers: undefined, status: undefined };
    let stream;
    const finish = () => resolve(out);
    if (streaming) {
      stream = client.serverStreaming(url, request, metadata, descriptor);
      stream.on("data", (m) => out.messages.push(m));
      stream.on("error", (e) => {
        out.error = e;
        finish();
      });
      stream.on("end", finish);
    } else {
      stream = client.rpcCall(url, request, metadata, descriptor, (err, res) => {
        if (err) out.error = err;
        else out.messages.push(res);
        finish();
      });
    }
    stream.on("metadata", (h) => (out.headers = h));
    stream.on("status", (s) => (out.status = s));
    signal.addEventListener("abort", () => stream.cancel());
  });
}

const GRPC_WEB = {
  name: "grpc-web",
  calls: {
    async unary(ctx, signal) {
      lastXhrContentType = undefined;
      const r = await grpcWebCall(ctx, "Unary", { message: "hello" }, {}, signal);
      checkNoError(r.error);
      checkEq(r.messages.map((m) => m.message), ["hello"], "messages");
      // grpcwebtext both ways: the client sent application/grpc-web-text and decoded base64.
      check(
        /^application\/grpc-web-text/.test(lastXhrContentType ?? ""),
        `response content type ${JSON.stringify(lastXhrContentType)}, want application/grpc-web-text`,
      );
    },
    async "server-stream"(ctx, signal) {
      const r = await grpcWebCall(ctx, "ServerStream", { message: "s", count: 3 }, {}, signal);
      checkNoError(r.error);
      checkEq(r.messages.map((m) => [m.message, m.index]), [["s", 0], ["s", 1], ["s", 2]], "stream");
    },
    async "error-details"(ctx, signal) {
      const r = await grpcWebCall(ctx, "Unary", { message: "x", error: ERROR }, {}, signal);
      check(r.error !== undefined, "the call did not fail");
      checkEq(r.error.code, grpcWeb.StatusCode.INVALID_ARGUMENT, "code");
      checkEq(r.error.message, "bad input", "message");
      checkStatusDetailsBin(r.error.metadata?.["grpc-status-details-bin"], "RpcError.metadata");
    },
    async metadata(ctx, signal) {
      const r = await grpcWebCall(ctx, "Unary", { message: "meta" }, { ...META_IN }, signal);
      checkNoError(r.error);
      checkEq(r.messages[0]?.metadata["x-header-a"], "alpha", "backend saw request header x-header-a");
      checkEq(r.headers?.["x-header-a"], "alpha", "response header x-header-a ('metadata' event)");
      checkEq(r.status?.metadata?.["x-trailer-b"], "beta", "trailer x-trailer-b ('status' event)");
    },
    async deadline(ctx, signal) {
      // grpc-web's own deadline: a `deadline` metadata entry (epoch ms) becomes grpc-timeout.
      const deadline = String(Date.now() + DEADLINE_MS);
      const r = await grpcWebCall(ctx, "Unary", SLOW, { deadline }, signal);
      check(r.error !== undefined, "the call did not fail");
      checkEq(r.error.code, grpcWeb.StatusCode.DEADLINE_EXCEEDED, `code (message ${JSON.stringify(r.error.message)})`);
      return { info: `message ${JSON.stringify(r.error.message)}` };
    },
  },
};

function checkNoError(err) {
  if (err) throw new CheckError(`call failed: code ${err.code}: ${JSON.stringify(err.message)}`);
}

// ---- @improbable-eng/grpc-web (Node HTTP transport) -----------------------------------------

/** MethodDefinition for `method`, with message "classes" over @bufbuild/protobuf. */
function improbableMethod(ctx, method) {
  const requestStream = method === "ClientStream" || method === "Bidi";
  const responseStream = method === "ServerStream" || method === "Bidi";
  const { EchoRequest, EchoResponse } = ctx;
  class Request {
    constructor(fields = {}) {
      this.fields = fields;
    }
    serializeBinary() {
      return toBinary(EchoRequest, create(EchoRequest, this.fields));
    }
    toObject() {
      return this.fields;
    }
    static deserializeBinary(bytes) {
      return new Request(fromBinary(EchoRequest, bytes));
    }
  }
  class Response {
    constructor(message) {
      this.message = message;
    }
    serializeBinary() {
      return toBinary(EchoResponse, this.message);
    }
    toObject() {
      return this.message;
    }
    static deserializeBinary(bytes) {
      return new Response(fromBinary(EchoResponse, bytes));
    }
  }
  return {
    def: {
      methodName: method,
      service: { serviceName: SERVICE },
      requestStream,
      responseStream,
      requestType: Request,
      responseType: Response,
    },
    Request,
  };
}

/** One call with grpc.invoke: resolves to { code, message, headers, messages, trailers }. */
function improbableCall(ctx, method, fields, metadata, signal) {
  const { def, Request } = improbableMethod(ctx, method);
  return new Promise((resolve) => {
    const out = { code: undefined, message: undefined, headers: undefined, messages: [], trailers: undefined };
    const req = improbable.invoke(def, {
      host: ctx.url,
      request: new Request(fields),
      metadata,
      transport: NodeHttpTransport(),
      onHeaders: (h) => (out.headers = h),
      onMessage: (m) => out.messages.push(m.message),
      onEnd: (code, message, trailers) => {
        Object.assign(out, { code, message, trailers });
        resolve(out);
      },
    });
    signal.addEventListener("abort", () => req.close());
  });
}

function checkImprobableOk(r) {
  if (r.code !== improbable.Code.OK) {
    throw new CheckError(`call failed: ${improbable.Code[r.code] ?? r.code}: ${JSON.stringify(r.message)}`);
  }
}

const IMPROBABLE = {
  name: "improbable",
  calls: {
    async unary(ctx, signal) {
      const r = await improbableCall(ctx, "Unary", { message: "hello" }, {}, signal);
      checkImprobableOk(r);
      checkEq(r.messages.map((m) => m.message), ["hello"], "messages");
    },
    async "server-stream"(ctx, signal) {
      const r = await improbableCall(ctx, "ServerStream", { message: "s", count: 3 }, {}, signal);
      checkImprobableOk(r);
      checkEq(r.messages.map((m) => [m.message, m.index]), [["s", 0], ["s", 1], ["s", 2]], "stream");
    },
    async "error-details"(ctx, signal) {
      const r = await improbableCall(ctx, "Unary", { message: "x", error: ERROR }, {}, signal);
      checkEq(improbable.Code[r.code], "InvalidArgument", "code");
      checkEq(r.message, "bad input", "message");
      checkStatusDetailsBin(r.trailers?.get("grpc-status-details-bin")[0], "trailers");
    },
    async metadata(ctx, signal) {
      const r = await improbableCall(ctx, "Unary", { message: "meta" }, { ...META_IN }, signal);
      checkImprobableOk(r);
      checkEq(r.messages[0]?.metadata["x-header-a"], "alpha", "backend saw request header x-header-a");
      checkEq(r.headers?.get("x-header-a"), ["alpha"], "response header x-header-a");
      checkEq(r.trailers?.get("x-trailer-b"), ["beta"], "trailer x-trailer-b");
    },
    async deadline(ctx, signal) {
      // The library has no deadline option: the caller sends grpc-timeout itself.
      const r = await improbableCall(ctx, "Unary", SLOW, { "grpc-timeout": `${DEADLINE_MS}m` }, signal);
      checkEq(improbable.Code[r.code], "DeadlineExceeded", `code (message ${JSON.stringify(r.message)})`);
      return { info: `message ${JSON.stringify(r.message)}` };
    },
  },
};

// ---- @improbable-eng/grpc-web (WebSocket transport) -----------------------------------------

/**
 * One call with grpc.client over grpc.WebsocketTransport(): sends `requests` (each after the
 * previous answer when `conversation`), then finishes sending. Resolves to
 * { code, message, headers, messages, trailers }.
 */
function improbableWsCall(ctx, method, requests, metadata, signal, { conversation = false } = {}) {
  const { def, Request } = improbableMethod(ctx, method);
  return new Promise((resolve) => {
    const out = { code: undefined, message: undefined, headers: undefined, messages: [], trailers: undefined };
    const client = improbable.client(def, { host: ctx.url, transport: improbable.WebsocketTransport() });
    let next = 0;
    const sendNext = () => {
      if (next < requests.length) client.send(new Request(requests[next++]));
      if (next === requests.length) {
        next++;
        client.finishSend();
      }
    };
    client.onHeaders((h) => (out.headers = h));
    client.onMessage((m) => {
      out.messages.push(m.message);
      if (conversation) sendNext();
    });
    client.onEnd((code, message, trailers) => {
      Object.assign(out, { code, message, trailers });
      resolve(out);
    });
    client.start(new improbable.Metadata(metadata));
    if (conversation) {
      sendNext();
    } else {
      while (next <= requests.length) sendNext();
    }
    signal.addEventListener("abort", () => client.close());
  });
}

const IMPROBABLE_WS = {
  name: "improbable-ws",
  calls: {
    async unary(ctx, signal) {
      const r = await improbableWsCall(ctx, "Unary", [{ message: "hello" }], {}, signal);
      checkImprobableOk(r);
      checkEq(r.messages.map((m) => m.message), ["hello"], "messages");
    },
    async "server-stream"(ctx, signal) {
      const r = await improbableWsCall(ctx, "ServerStream", [{ message: "s", count: 3 }], {}, signal);
      checkImprobableOk(r);
      checkEq(r.messages.map((m) => [m.message, m.index]), [["s", 0], ["s", 1], ["s", 2]], "stream");
    },
    async "client-stream"(ctx, signal) {
      const payloads = [new Uint8Array([1, 2]), new Uint8Array([]), new Uint8Array([3])];
      const requests = ["a", "b", "c"].map((message, i) => ({ message, payload: payloads[i] }));
      const r = await improbableWsCall(ctx, "ClientStream", requests, {}, signal);
      checkImprobableOk(r);
      checkEq(r.messages.map((m) => m.message), ["a,b,c"], "joined messages");
      checkEq(Array.from(r.messages[0]?.payload ?? []), [1, 2, 3], "payloads");
    },
    async bidi(ctx, signal) {
      // A conversation: each message goes out after the answer to the previous one.
      const requests = ["b0", "b1", "b2", "b3"].map((message) => ({ message }));
      const r = await improbableWsCall(ctx, "Bidi", requests, { "x-header-h": "bidi" }, signal, { conversation: true });
      checkImprobableOk(r);
      checkEq(r.messages.map((m) => [m.message, m.index]), requests.map((q, i) => [q.message, i]), "answers");
      checkEq(r.headers?.get("x-header-h"), ["bidi"], "response header x-header-h");
    },
    async "error-details"(ctx, signal) {
      const r = await improbableWsCall(ctx, "Unary", [{ message: "x", error: ERROR }], {}, signal);
      checkEq(improbable.Code[r.code], "InvalidArgument", "code");
      checkEq(r.message, "bad input", "message");
      checkStatusDetailsBin(r.trailers?.get("grpc-status-details-bin")[0], "trailers");
    },
    async metadata(ctx, signal) {
      const r = await improbableWsCall(ctx, "Unary", [{ message: "meta" }], { ...META_IN }, signal);
      checkImprobableOk(r);
      checkEq(r.messages[0]?.metadata["x-header-a"], "alpha", "backend saw request header x-header-a");
      checkEq(r.headers?.get("x-header-a"), ["alpha"], "response header x-header-a");
      checkEq(r.trailers?.get("x-trailer-b"), ["beta"], "trailer x-trailer-b");
    },
    async deadline(ctx, signal) {
      const r = await improbableWsCall(ctx, "Unary", [SLOW], { "grpc-timeout": `${DEADLINE_MS}m` }, signal);
      checkEq(improbable.Code[r.code], "DeadlineExceeded", `code (message ${JSON.stringify(r.message)})`);
      return { info: `message ${JSON.stringify(r.message)}` };
    },
  },
};

// ---- buf curl --protocol grpcweb ------------------------------------------------------------

function runBuf(args, signal) {
  return new Promise((resolve, reject) => {
    const child = spawn(BUF, args, {
      env: { ...process.env, BUF_CACHE_DIR },
      stdio: ["ignore", "pipe", "pipe"],
      signal,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code, sig) => resolve({ code: code ?? `signal ${sig}`, stdout, stderr }));
  });
}

function bufCurl(ctx, method, data, extra, signal) {
  return runBuf(
    [
      "curl",
      "--schema", ctx.descriptor,
      "--protocol", "grpcweb",
      ...(extra.includes("--timeout") ? [] : ["--timeout", "10s"]),
      ...extra,
      "-d", JSON.stringify(data),
      `${ctx.url}/${SERVICE}/${method}`,
    ],
    signal,
  );
}

/** buf curl's output (zero or more pretty-printed JSON documents) as values. */
function parseJsonSeq(text) {
  const out = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') {
      inString = true;
    } else if (ch === "{") {
      if (depth++ === 0) start = i;
    } else if (ch === "}") {
      if (--depth === 0) out.push(JSON.parse(text.slice(start, i + 1)));
    }
  }
  if (depth !== 0) throw new CheckError(`truncated JSON output: ${text}`);
  return out;
}

function checkBufOk(r) {
  if (r.code !== 0) throw new CheckError(`exit status ${r.code}: ${oneLine(r.stderr || r.stdout)}`);
}

/** The error buf curl prints to stderr as JSON ({ code, message, details }). */
function bufError(r) {
  check(r.code !== 0, `exit status 0, want non-zero; stdout: ${oneLine(r.stdout)}`);
  const err = parseJsonSeq(r.stderr).find((v) => typeof v.code === "string");
  check(err !== undefined, `no JSON error on stderr: ${oneLine(r.stderr)}`);
  return err;
}

/** Values of the response header `name` in `buf curl -v` output ("buf: < (#1) Name: value"). */
function bufVerboseLines(stderr, name) {
  const re = new RegExp(`^(?:buf: )?< \\(#\\d+\\) ${name}: (.*)$`, "i");
  return stderr.split("\n").map((l) => re.exec(l.trim())?.[1]).filter((v) => v !== undefined);
}

const BUF_CURL = {
  name: "buf-curl",
  calls: {
    async unary(ctx, signal) {
      const r = await bufCurl(ctx, "Unary", { message: "hello" }, [], signal);
      checkBufOk(r);
      checkEq(parseJsonSeq(r.stdout).map((m) => m.message), ["hello"], "messages");
    },
    async "server-stream"(ctx, signal) {
      const r = await bufCurl(ctx, "ServerStream", { message: "s", count: 3 }, [], signal);
      checkBufOk(r);
      const got = parseJsonSeq(r.stdout).map((m) => [m.message, m.index ?? 0]);
      checkEq(got, [["s", 0], ["s", 1], ["s", 2]], "stream");
    },
    async "error-details"(ctx, signal) {
      const r = await bufCurl(ctx, "Unary", { message: "x", error: ERROR }, [], signal);
      const err = bufError(r);
      checkEq(err.code, "invalid_argument", "code");
      checkEq(err.message, "bad input", "message");
      checkEq((err.details ?? []).map((d) => d.type), ["google.rpc.BadRequest"], "detail types");
      const badRequest = fromBinary(BadRequestSchema, Buffer.from(err.details[0].value, "base64"));
      checkBadRequests([badRequest], "detail");
    },
    async metadata(ctx, signal) {
      const headers = Object.entries(META_IN).flatMap(([k, v]) => ["-H", `${k}: ${v}`]);
      const r = await bufCurl(ctx, "Unary", { message: "meta" }, [...headers, "-v"], signal);
      checkBufOk(r);
      const [res] = parseJsonSeq(r.stdout);
      checkEq(res?.metadata?.["x-header-a"], "alpha", "backend saw request header x-header-a");
      checkEq(bufVerboseLines(r.stderr, "x-header-a"), ["alpha"], "response header x-header-a (-v)");
      // -v prints HTTP trailers only; a gRPC-Web reply carries its trailers in the body, which
      // buf curl neither prints nor exposes otherwise.
      return { note: "trailers not checked: buf curl -v does not print gRPC-Web trailers, which are in the body" };
    },
    async deadline(ctx, signal) {
      // buf curl refuses a grpc-timeout header ("reserved"); its deadline is --timeout, sent
      // as grpc-timeout. That budget includes buf's own start-up (~200 ms), hence 1 s here:
      // still far below the backend's 3 s delay.
      const r = await bufCurl(ctx, "Unary", SLOW, ["--timeout", `${BUF_DEADLINE_MS}ms`], signal);
      const err = bufError(r);
      checkEq(err.code, "deadline_exceeded", `code (message ${JSON.stringify(err.message)})`);
      return {
        note: `deadline set with --timeout ${BUF_DEADLINE_MS}ms, as buf refuses a grpc-timeout header`,
        info: `message ${JSON.stringify(err.message)}`,
      };
    },
  },
};

// ---- shared checks --------------------------------------------------------------------------

function checkBadRequests(badRequests, what) {
  checkEq(badRequests.length, 1, `number of BadRequest ${what}`);
  const v = badRequests[0].fieldViolations.map((f) => ({ field: f.field, description: f.description }));
  checkEq(v, [TEST_BAD_REQUEST], `BadRequest field violations (${what})`);
}

/** Checks a grpc-status-details-bin value: present, a google.rpc.Status for this error. */
function checkStatusDetailsBin(value, where) {
  check(value !== undefined && value !== "", `no grpc-status-details-bin in the ${where}`);
  const status = decodeStatusDetailsBin(typeof value === "string" ? value : Buffer.from(value));
  checkEq(status.code, ERROR.code, "grpc-status-details-bin code");
  checkEq(status.message, ERROR.message, "grpc-status-details-bin message");
  checkEq(status.typeUrls, ["type.googleapis.com/google.rpc.BadRequest"], "grpc-status-details-bin detail types");
  checkBadRequests(status.badRequests, "in grpc-status-details-bin");
}

function oneLine(text) {
  const s = String(text).replace(/\s+/g, " ").trim();
  return s.length > 300 ? `${s.slice(0, 300)}...` : s;
}

// ---- the matrix -----------------------------------------------------------------------------

const CLIENTS = [
  connectNodeClient("connect-node/connect", (baseUrl) =>
    createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true }),
  ),
  connectNodeClient("connect-node/grpc-web", (baseUrl) =>
    createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true }),
  ),
  GRPC_WEB,
  IMPROBABLE,
  IMPROBABLE_WS,
  BUF_CURL,
];

function allCells() {
  return CLIENTS.flatMap((client) =>
    CALLS.filter((call) => client.calls[call]).map((call) => ({ client: client.name, call, run: client.calls[call] })),
  );
}

async function runCell(cell, ctx) {
  const started = performance.now();
  const abort = new AbortController();
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => {
      abort.abort();
      reject(new CheckError(`no result within ${CELL_TIMEOUT_MS} ms`));
    }, CELL_TIMEOUT_MS);
  });
  try {
    const { note, info } = (await Promise.race([cell.run(ctx, abort.signal), limit])) ?? {};
    const ms = Math.round(performance.now() - started);
    const detail = `(${ms} ms${note ? `; ${oneLine(note)}` : ""})${info ? ` ${oneLine(info)}` : ""}`;
    console.log(`CELL ${cell.client} ${cell.call} PASS ${detail}`);
    return true;
  } catch (e) {
    const reason = e instanceof CheckError ? e.message : describeError(e);
    console.log(`CELL ${cell.client} ${cell.call} FAIL ${oneLine(reason)}`);
    return false;
  } finally {
    clearTimeout(timer);
  }
}

const USAGE = `usage: node matrix.mjs --url BASE_URL --descriptor FILE [--only TEXT]... | --list`;

async function main() {
  const args = parseCommonArgs(USAGE);
  let cells = allCells();
  if (args.only) cells = cells.filter((c) => args.only.some((o) => `${c.client} ${c.call}`.includes(o)));
  if (args.list) {
    for (const c of cells) console.log(`${c.client} ${c.call}`);
    return 0;
  }
  if (cells.length === 0) {
    console.error("no cell matches --only");
    return 2;
  }
  const registry = loadRegistry(args.descriptor);
  const ctx = {
    url: args.url,
    descriptor: args.descriptor,
    service: getService(registry),
    EchoRequest: registry.getMessage("switchboard.testing.v1.EchoRequest"),
    EchoResponse: registry.getMessage("switchboard.testing.v1.EchoResponse"),
  };
  mkdirSync(BUF_CACHE_DIR, { recursive: true });
  let failed = 0;
  for (const cell of cells) {
    if (!(await runCell(cell, ctx))) failed++;
  }
  console.log(`matrix against ${args.url}: ${cells.length - failed} of ${cells.length} cells passed`);
  return failed === 0 ? 0 : 1;
}

// Exit explicitly: idle keep-alive connections would otherwise keep the process alive.
main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
