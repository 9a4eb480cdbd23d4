#!/usr/bin/env node
// Drives `buf curl` (the binary shipped in the @bufbuild/buf npm package) against a
// Switchboard proxy that fronts the test backend, one PASS/FAIL line per case.
//
//   node tests/interop/buf-curl.mjs --url http://127.0.0.1:PORT --descriptor testing_descriptor.bin
//   node tests/interop/buf-curl.mjs --list
//
// Exit status: 0 when every case passed, 1 when any failed, 2 on bad usage.

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { check, checkEq, CheckError, parseCommonArgs, runCases, SERVICE } from "./lib.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const BUF = join(HERE, "node_modules", ".bin", "buf");
// buf keeps a cache; keep it inside the package (git-ignored), not in $HOME.
const BUF_CACHE_DIR = join(HERE, ".cache", "buf");

// Every way buf curl talks to the proxy. Adding a protocol is one entry here.
const PROTOCOLS = [
  { name: "grpcweb/http1.1", flags: ["--protocol", "grpcweb"] },
  { name: "grpcweb/http2", flags: ["--protocol", "grpcweb", "--http2-prior-knowledge"] },
  { name: "grpc/http2", flags: ["--protocol", "grpc", "--http2-prior-knowledge"] },
  { name: "connect/http1.1", flags: ["--protocol", "connect"] },
  { name: "connect/http2", flags: ["--protocol", "connect", "--http2-prior-knowledge"] },
];

// Every case: { name, method, data, check(result) } with result = { code, stdout, stderr }.
const CASES = [
  {
    name: "unary",
    method: "Unary",
    data: { message: "hi from buf" },
    check(r) {
      checkExit0(r);
      const [res] = parseJsonSeq(r.stdout);
      checkEq(res?.message, "hi from buf", "echoed message");
    },
  },
  {
    name: "server stream of 3",
    method: "ServerStream",
    data: { message: "s", count: 3 },
    check(r) {
      checkExit0(r);
      const got = parseJsonSeq(r.stdout).map((m) => [m.message, m.index ?? 0]);
      checkEq(got, [["s", 0], ["s", 1], ["s", 2]], "stream");
    },
  },
  {
    name: "error",
    method: "Unary",
    data: { message: "x", error: { code: 3, message: "bad input", withDetails: true } },
    check(r) {
      check(r.code !== 0, `exit status 0, want non-zero; stdout: ${r.stdout}`);
      const out = r.stdout + r.stderr;
      check(out.includes("invalid_argument"), `output does not mention invalid_argument: ${out}`);
      check(out.includes("bad input"), `output does not mention the message: ${out}`);
      check(out.includes("google.rpc.BadRequest"), `output does not mention the detail type: ${out}`);
    },
  },
];

function checkExit0(r) {
  if (r.code !== 0) throw new CheckError(`exit status ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
}

/** Splits buf curl's output (zero or more pretty-printed JSON documents) into values. */
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

function allCases(args) {
  const out = [];
  for (const p of PROTOCOLS) {
    for (const c of CASES) {
      out.push({
        name: `buf curl ${p.name}: ${c.name}`,
        async run(signal) {
          const r = await runBuf(
            [
              "curl",
              "--schema", args.descriptor,
              ...p.flags,
              "--timeout", "10s",
              "-d", JSON.stringify(c.data),
              `${args.url}/${SERVICE}/${c.method}`,
            ],
            signal,
          );
          c.check(r);
        },
      });
    }
  }
  return out;
}

const USAGE = `usage: node buf-curl.mjs --url BASE_URL --descriptor FILE [--only TEXT]... | --list`;

async function main() {
  const args = parseCommonArgs(USAGE);
  let cases = allCases(args);
  if (args.only) cases = cases.filter((c) => args.only.some((o) => c.name.includes(o)));
  if (args.list) {
    for (const c of cases) console.log(c.name);
    return 0;
  }
  if (cases.length === 0) {
    console.error("no case matches --only");
    return 2;
  }
  mkdirSync(BUF_CACHE_DIR, { recursive: true });
  const version = await runBuf(["--version"]);
  console.log(`buf ${version.stdout.trim()} against ${args.url}`);
  const failed = await runCases(cases, { label: "buf curl" });
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
