#!/usr/bin/env node
// The test service (proto/switchboard/testing/v1/testing.proto) implemented with @grpc/grpc-js,
// with the same behaviour as the tonic backend of the integration tests
// (tests/integration/support/backend.rs):
// - Unary / Lookup: wait delay_ms, then fail with `error` (with_details adds a
//   google.rpc.BadRequest in grpc-status-details-bin) or echo the request;
// - ServerStream: `count` responses delay_ms apart, then `error` if set;
// - ClientStream: one response, the messages joined by "," and the payloads concatenated;
// - Bidi: one response per request, as each arrives;
// - metadata echo: request header x-header-NAME comes back as a response header, x-trailer-NAME
//   as a trailer (both in the one block of a Trailers-Only error, as tonic does).
//
//   node tests/interop/backends/grpc-js-server.mjs
//
// Listens on 127.0.0.1 on an ephemeral port (h2c), prints the port as the first line of stdout
// once it accepts connections, and exits when its stdin closes.

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { badRequestStatusBin } from "../lib.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const PROTO_ROOT = join(HERE, "..", "..", "..", "proto");
const PROTO_FILE = "switchboard/testing/v1/testing.proto";

const definition = protoLoader.loadSync(PROTO_FILE, {
  includeDirs: [PROTO_ROOT],
  keepCase: false, // delayMs, responseSize, withDetails, grpcTimeout
  longs: Number,
  enums: Number,
  defaults: true,
  oneofs: true,
});
const pkg = grpc.loadPackageDefinition(definition);
const TestService = pkg.switchboard.testing.v1.TestService;

/** The x-header-* / x-trailer-* metadata of a request, to send back. */
// Headers the proxy adds to every call; not echoed, so replies compare equal with and without
// a proxy in between.
const PROXY_HEADERS = new Set(["x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-real-ip"]);

function echoMetadata(requestMetadata) {
  const headers = new grpc.Metadata();
  const trailers = new grpc.Metadata();
  for (const [name, values] of Object.entries(requestMetadata.toJSON())) {
    const into = name.startsWith("x-header-") ? headers : name.startsWith("x-trailer-") ? trailers : null;
    if (into) for (const v of values) into.add(name, v);
  }
  return { headers, trailers };
}

/** The status object grpc-js sends for `spec` (an ErrorSpec), with `trailers` added. */
function errorStatus(spec, trailers) {
  const metadata = trailers.clone();
  if (spec.withDetails) {
    metadata.set("grpc-status-details-bin", Buffer.from(badRequestStatusBin(spec.code, spec.message)));
  }
  return { code: spec.code, details: spec.message, metadata };
}

/** The grpc-timeout the call arrived with. grpc-js consumes the header, so it is rebuilt, in
 * milliseconds, from the deadline grpc-js derived from it; empty when there is none. */
function grpcTimeout(call) {
  const deadline = call.getDeadline();
  if (!(deadline instanceof Date) && !Number.isFinite(deadline)) return "";
  const ms = Math.max(0, Math.round(Number(deadline) - Date.now()));
  return `${ms}m`;
}

/** x-* request metadata as a map of strings (binary values left out). */
function xMetadata(requestMetadata) {
  const out = {};
  for (const [name, values] of Object.entries(requestMetadata.getMap())) {
    if (name.startsWith("x-") && !PROXY_HEADERS.has(name) && typeof values === "string") out[name] = values;
  }
  return out;
}

function respond(req, index, call, timeout) {
  const payload = req.responseSize > 0 ? Buffer.alloc(req.responseSize, "x") : req.payload;
  return {
    message: req.message,
    payload,
    index,
    grpcTimeout: timeout,
    metadata: xMetadata(call.metadata),
  };
}

/** Waits `ms`; resolves early (to false) when the call is cancelled. */
function delay(call, ms) {
  if (ms <= 0) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(true), ms);
    call.once("cancelled", () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

async function answerOnce(call, callback) {
  const timeout = grpcTimeout(call);
  const { headers, trailers } = echoMetadata(call.metadata);
  const req = call.request;
  if (!(await delay(call, req.delayMs))) return;
  if (req.error) {
    // Trailers-Only: the one header block carries the echoed headers too.
    const all = headers.clone();
    all.merge(trailers);
    callback(errorStatus(req.error, all));
    return;
  }
  call.sendMetadata(headers);
  callback(null, respond(req, 0, call, timeout), trailers);
}

const implementation = {
  unary: answerOnce,
  lookup: answerOnce,

  async serverStream(call) {
    const timeout = grpcTimeout(call);
    const { headers, trailers } = echoMetadata(call.metadata);
    const req = call.request;
    call.sendMetadata(headers);
    for (let i = 0; i < req.count; i++) {
      if (!(await delay(call, req.delayMs))) return;
      call.write(respond(req, i, call, timeout));
    }
    if (req.error) {
      call.emit("error", errorStatus(req.error, trailers));
    } else {
      call.end(trailers);
    }
  },

  clientStream(call, callback) {
    const timeout = grpcTimeout(call);
    const { headers, trailers } = echoMetadata(call.metadata);
    const messages = [];
    const payloads = [];
    call.on("data", (req) => {
      messages.push(req.message);
      payloads.push(req.payload);
    });
    call.on("end", () => {
      const joined = { message: messages.join(","), payload: Buffer.concat(payloads), responseSize: 0 };
      call.sendMetadata(headers);
      callback(null, respond(joined, 0, call, timeout), trailers);
    });
  },

  bidi(call) {
    const timeout = grpcTimeout(call);
    const { headers, trailers } = echoMetadata(call.metadata);
    call.sendMetadata(headers);
    let index = 0;
    let failed = false;
    call.on("data", (req) => {
      if (failed) return;
      if (req.error) {
        failed = true;
        call.emit("error", errorStatus(req.error, trailers));
        return;
      }
      call.write(respond(req, index++, call, timeout));
    });
    call.on("end", () => {
      if (!failed) call.end(trailers);
    });
  },
};

const server = new grpc.Server({
  // No message limit of its own: the proxy's limits are what the tests exercise.
  "grpc.max_receive_message_length": -1,
  "grpc.max_send_message_length": -1,
});
server.addService(TestService.service, implementation);
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(`grpc-js backend: cannot listen: ${err.message}`);
    process.exit(1);
  }
  // The readiness signal: the port, alone on the first line.
  process.stdout.write(`${port}\n`);
});

// Stop with the parent: it holds our stdin and closes it (or dies).
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.stdin.resume();
