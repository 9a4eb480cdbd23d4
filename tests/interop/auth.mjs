#!/usr/bin/env node
// Third-party clients sending credentials through their interceptors to a Switchboard route
// with JWT auth (tests/integration/security/interop.rs starts the backend and the proxy and
// signs the tokens). One PASS/FAIL line per case.
//
//   node tests/interop/auth.mjs --url URL --descriptor testing_descriptor.bin \
//        --token GOOD_JWT --bad-token EXPIRED_JWT
//
// Clients: @connectrpc/connect-node (Connect and gRPC-Web transports, HTTP/1.1 and HTTP/2, an
// interceptor that sets `Authorization`) and Google's grpc-web (GrpcWebClientBase with a unary
// interceptor that adds the metadata). With the good token the backend sees the token's `sub`
// as x-user; with the bad one the call fails with UNAUTHENTICATED.

import { createRequire } from "node:module";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { CheckError, checkEq, getService, loadRegistry, parseCommonArgs, runCases, SERVICE } from "./lib.mjs";

const require = createRequire(import.meta.url);
const grpcWeb = require("grpc-web");
globalThis.XMLHttpRequest = require("xhr2");

const USAGE = "usage: auth.mjs --url URL --descriptor FILE --token JWT --bad-token JWT";
const args = parseCommonArgs(USAGE, { token: { type: "string" }, "bad-token": { type: "string" } });
if (!args.token || !args["bad-token"]) {
  console.error(USAGE);
  process.exit(2);
}

const registry = loadRegistry(args.descriptor);
const service = getService(registry);
const EchoRequest = registry.getMessage("switchboard.testing.v1.EchoRequest");
const EchoResponse = registry.getMessage("switchboard.testing.v1.EchoResponse");

/** A connect-es interceptor that authenticates every call with `token`. */
const bearer = (token) => (next) => async (req) => {
  req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

const TRANSPORTS = [
  ["connect-node connect/http1.1", (o) => createConnectTransport({ ...o, httpVersion: "1.1" })],
  ["connect-node connect/http2", (o) => createConnectTransport({ ...o, httpVersion: "2" })],
  ["connect-node grpc-web/http1.1", (o) => createGrpcWebTransport({ ...o, httpVersion: "1.1" })],
  ["connect-node grpc-web/http2", (o) => createGrpcWebTransport({ ...o, httpVersion: "2" })],
];

async function expectCode(promise, code) {
  try {
    const res = await promise;
    throw new CheckError(`expected ${Code[code]}, got a response ${JSON.stringify(res)}`);
  } catch (e) {
    if (e instanceof CheckError) throw e;
    const err = ConnectError.from(e);
    checkEq(Code[err.code], Code[code], `code (message ${JSON.stringify(err.rawMessage)})`);
  }
}

/** Google grpc-web's interceptor interface: adds the token to each unary call's metadata. */
class BearerInterceptor {
  constructor(token) {
    this.token = token;
  }
  intercept(request, invoker) {
    request.getMetadata()["authorization"] = `Bearer ${this.token}`;
    return invoker(request);
  }
}

function grpcWebUnary(token, message) {
  const client = new grpcWeb.GrpcWebClientBase({
    format: "text",
    unaryInterceptors: [new BearerInterceptor(token)],
  });
  const descriptor = new grpcWeb.MethodDescriptor(
    `/${SERVICE}/Unary`,
    grpcWeb.MethodType.UNARY,
    Object,
    Object,
    (req) => toBinary(EchoRequest, create(EchoRequest, req)),
    (bytes) => fromBinary(EchoResponse, bytes),
  );
  return client.unaryCall(`${args.url}/${SERVICE}/Unary`, { message }, {}, descriptor);
}

const cases = [];
for (const [name, make] of TRANSPORTS) {
  cases.push({
    name: `${name} with a valid token`,
    async run(signal) {
      const client = createClient(service, make({ baseUrl: args.url, interceptors: [bearer(args.token)] }));
      const res = await client.unary({ message: "hi" }, { signal });
      checkEq(res.message, "hi", "message");
      checkEq(res.metadata["x-user"], "alice", "the backend saw the token's sub");
      checkEq(res.metadata["authorization"], undefined, "the token is not forwarded");
    },
  });
  cases.push({
    name: `${name} with an expired token`,
    async run(signal) {
      const client = createClient(service, make({ baseUrl: args.url, interceptors: [bearer(args["bad-token"])] }));
      await expectCode(client.unary({ message: "hi" }, { signal }), Code.Unauthenticated);
    },
  });
  cases.push({
    name: `${name} without a token`,
    async run(signal) {
      const client = createClient(service, make({ baseUrl: args.url }));
      await expectCode(client.unary({ message: "hi" }, { signal }), Code.Unauthenticated);
    },
  });
}
cases.push({
  name: "grpc-web (Google) unary interceptor with a valid token",
  async run() {
    const res = await grpcWebUnary(args.token, "hi");
    checkEq(res.message, "hi", "message");
    checkEq(res.metadata["x-user"], "alice", "the backend saw the token's sub");
  },
});
cases.push({
  name: "grpc-web (Google) unary interceptor with an expired token",
  async run() {
    try {
      const res = await grpcWebUnary(args["bad-token"], "hi");
      throw new CheckError(`expected UNAUTHENTICATED, got ${JSON.stringify(res)}`);
    } catch (e) {
      if (e instanceof CheckError) throw e;
      checkEq(e.code, grpcWeb.StatusCode.UNAUTHENTICATED, `code (message ${JSON.stringify(e.message)})`);
    }
  },
});

const failed = await runCases(cases, { label: "auth.mjs" });
process.exit(failed === 0 ? 0 : 1);
