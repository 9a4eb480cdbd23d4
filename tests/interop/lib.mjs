// Shared helpers of the interop scripts: argument parsing, the descriptor set, and a tiny
// case runner that prints one PASS/FAIL line per case.

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { create, createFileRegistry, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  anyPack,
  anyUnpack,
  file_google_protobuf_any,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";

export const SERVICE = "switchboard.testing.v1.TestService";

/** Parses the common flags; exits with usage on error. */
export function parseCommonArgs(usage, extra = {}) {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        url: { type: "string" },
        descriptor: { type: "string" },
        only: { type: "string", multiple: true },
        list: { type: "boolean" },
        help: { type: "boolean", short: "h" },
        ...extra,
      },
      strict: true,
    }));
  } catch (e) {
    console.error(`${e.message}\n\n${usage}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  if (!values.list && (!values.url || !values.descriptor)) {
    console.error(`--url and --descriptor are required\n\n${usage}`);
    process.exit(2);
  }
  if (values.url) values.url = values.url.replace(/\/+$/, "");
  return values;
}

/** Loads a FileDescriptorSet (protoc --include_imports output) into a registry. */
export function loadRegistry(path) {
  const set = fromBinary(FileDescriptorSetSchema, readFileSync(path));
  return createFileRegistry(set);
}

export function getService(registry) {
  const service = registry.getService(SERVICE);
  if (!service) throw new Error(`${SERVICE} is not in the descriptor set`);
  return service;
}

/**
 * google.rpc.BadRequest, described by hand (the test proto does not import
 * google/rpc/error_details.proto), to decode the detail the backend attaches to errors.
 */
export const BadRequestSchema = (() => {
  const [LABEL_OPTIONAL, LABEL_REPEATED, TYPE_STRING, TYPE_MESSAGE] = [1, 3, 9, 11];
  const file = create(FileDescriptorProtoSchema, {
    name: "google/rpc/error_details.proto",
    package: "google.rpc",
    syntax: "proto3",
    messageType: [
      {
        name: "BadRequest",
        field: [
          {
            name: "field_violations",
            jsonName: "fieldViolations",
            number: 1,
            label: LABEL_REPEATED,
            type: TYPE_MESSAGE,
            typeName: ".google.rpc.BadRequest.FieldViolation",
          },
        ],
        nestedType: [
          {
            name: "FieldViolation",
            field: [
              { name: "field", jsonName: "field", number: 1, label: LABEL_OPTIONAL, type: TYPE_STRING },
              { name: "description", jsonName: "description", number: 2, label: LABEL_OPTIONAL, type: TYPE_STRING },
            ],
          },
        ],
      },
    ],
  });
  return createFileRegistry(file, () => undefined).getMessage("google.rpc.BadRequest");
})();

/** google.rpc.Status (the message inside grpc-status-details-bin), described by hand too. */
export const RpcStatusSchema = (() => {
  const [LABEL_OPTIONAL, LABEL_REPEATED, TYPE_INT32, TYPE_STRING, TYPE_MESSAGE] = [1, 3, 5, 9, 11];
  const file = create(FileDescriptorProtoSchema, {
    name: "google/rpc/status.proto",
    package: "google.rpc",
    syntax: "proto3",
    dependency: ["google/protobuf/any.proto"],
    messageType: [
      {
        name: "Status",
        field: [
          { name: "code", jsonName: "code", number: 1, label: LABEL_OPTIONAL, type: TYPE_INT32 },
          { name: "message", jsonName: "message", number: 2, label: LABEL_OPTIONAL, type: TYPE_STRING },
          {
            name: "details",
            jsonName: "details",
            number: 3,
            label: LABEL_REPEATED,
            type: TYPE_MESSAGE,
            typeName: ".google.protobuf.Any",
          },
        ],
      },
    ],
  });
  return createFileRegistry(file, (name) =>
    name === "google/protobuf/any.proto" ? file_google_protobuf_any : undefined,
  ).getMessage("google.rpc.Status");
})();

/** The detail the test backends attach to errors: BadRequest{message: must not be empty}. */
export const TEST_BAD_REQUEST = { field: "message", description: "must not be empty" };

/**
 * The grpc-status-details-bin value (binary google.rpc.Status) the test backends send for an
 * error with details: the status plus one google.rpc.BadRequest.
 */
export function badRequestStatusBin(code, message) {
  const badRequest = create(BadRequestSchema, { fieldViolations: [TEST_BAD_REQUEST] });
  const status = create(RpcStatusSchema, {
    code,
    message,
    details: [anyPack(BadRequestSchema, badRequest)],
  });
  return toBinary(RpcStatusSchema, status);
}

/**
 * Decodes a grpc-status-details-bin value (bytes, or base64 with or without padding as it
 * appears in HTTP metadata) to { code, message, badRequests: BadRequest[], typeUrls: string[] }.
 * Throws a CheckError when it is not a google.rpc.Status.
 */
export function decodeStatusDetailsBin(value) {
  const bytes = typeof value === "string" ? Buffer.from(value, "base64") : value;
  let status;
  try {
    status = fromBinary(RpcStatusSchema, bytes);
  } catch (e) {
    throw new CheckError(`grpc-status-details-bin does not decode as google.rpc.Status: ${e.message}`);
  }
  return {
    code: status.code,
    message: status.message,
    typeUrls: status.details.map((d) => d.typeUrl),
    badRequests: status.details.map((d) => anyUnpack(d, BadRequestSchema)).filter((m) => m !== undefined),
  };
}

export class CheckError extends Error {}

/** Throws a CheckError with `what` unless `cond` holds. */
export function check(cond, what) {
  if (!cond) throw new CheckError(what);
}

/** Throws unless `got` equals `want` (compared as JSON). */
export function checkEq(got, want, what) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new CheckError(`${what}: expected ${w}, got ${g}`);
}

/**
 * Runs named cases one after another, each with a time limit, and prints
 * `PASS name (N ms)` or `FAIL name: reason`. Returns the number of failures.
 * Each case is `{ name, run(signal) }`; `signal` aborts when the time limit passes.
 */
export async function runCases(cases, { timeoutMs = 15000, label = "cases" } = {}) {
  let failed = 0;
  for (const c of cases) {
    const started = performance.now();
    const abort = new AbortController();
    let timer;
    const limit = new Promise((_, reject) => {
      timer = setTimeout(() => {
        abort.abort();
        reject(new CheckError(`no result within ${timeoutMs} ms`));
      }, timeoutMs);
    });
    try {
      await Promise.race([c.run(abort.signal), limit]);
      const ms = Math.round(performance.now() - started);
      console.log(`PASS ${c.name} (${ms} ms)`);
    } catch (e) {
      failed++;
      const reason = e instanceof CheckError ? e.message : describeError(e);
      console.log(`FAIL ${c.name}: ${reason}`);
    } finally {
      clearTimeout(timer);
    }
  }
  const passed = cases.length - failed;
  // Deliberately not the "N passed, N failed" shape: that line belongs to the test runner.
  console.log(`${label}: ${passed} of ${cases.length} cases passed`);
  return failed;
}

export function describeError(e) {
  if (e && typeof e === "object" && "code" in e && "rawMessage" in e) {
    return `unexpected ConnectError ${Code[e.code] ?? e.code}: ${JSON.stringify(e.rawMessage)}`;
  }
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}
