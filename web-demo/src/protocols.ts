// The four ways the page calls the demo service, behind one function, `call`:
//   Connect JSON / Connect proto  @connectrpc/connect-web createConnectTransport
//   gRPC-Web binary               @connectrpc/connect-web createGrpcWebTransport
//   gRPC-Web text                 Google's grpc-web GrpcWebClientBase({ format: "text" })
// Every call reports its messages as they arrive, then its headers, trailers, status and
// bytes on the wire.

import {
  createRegistry,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethod,
  type Message,
} from "@bufbuild/protobuf";
import { base64Decode } from "@bufbuild/protobuf/wire";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import * as grpcWeb from "grpc-web";

import { BadRequestSchema, ErrorInfoSchema, type BadRequest } from "./gen/google/rpc/error_details_pb";
import { StatusSchema } from "./gen/google/rpc/status_pb";
import { DemoService } from "./gen/switchboard/demo/v1/demo_pb";
import { meteredFetch, newMeter, withXhrMeter, type Meter } from "./meter";

export type ProtocolId = "connect-json" | "connect-proto" | "grpc-web" | "grpc-web-text";

export interface Protocol {
  id: ProtocolId;
  title: string;
  /** The request content-type of unary calls. */
  contentType: string;
  /** The client library and how it is set up. */
  library: string;
}

export const PROTOCOLS: readonly Protocol[] = [
  {
    id: "connect-json",
    title: "Connect · JSON",
    contentType: "application/json",
    library: "@connectrpc/connect-web createConnectTransport({ useBinaryFormat: false })",
  },
  {
    id: "connect-proto",
    title: "Connect · protobuf",
    contentType: "application/proto",
    library: "@connectrpc/connect-web createConnectTransport({ useBinaryFormat: true })",
  },
  {
    id: "grpc-web",
    title: "gRPC-Web · binary",
    contentType: "application/grpc-web+proto",
    library: "@connectrpc/connect-web createGrpcWebTransport()",
  },
  {
    id: "grpc-web-text",
    title: "gRPC-Web · text",
    contentType: "application/grpc-web-text",
    library: "grpc-web GrpcWebClientBase({ format: \"text\" })",
  },
];

/** One error detail, decoded when its type is known. */
export interface Detail {
  type: string;
  /** Human-readable lines. */
  lines: string[];
}

export interface CallError {
  /** The gRPC code name in snake case, as Connect spells it: "invalid_argument". */
  code: string;
  codeNumber: number;
  message: string;
  details: Detail[];
}

export interface CallResult {
  /** `x-demo-*` response headers. */
  headers: Record<string, string>;
  /** `x-demo-*` response trailers. */
  trailers: Record<string, string>;
  error?: CallError;
  meter: Meter;
}

export interface CallRequest<I extends DescMessage = DescMessage, O extends DescMessage = DescMessage> {
  method: DescMethod & { input: I; output: O };
  input: Message;
  /** Request metadata. */
  headers: Record<string, string>;
  timeoutMs?: number;
  /** Each response message, as it arrives. */
  onMessage: (message: Message) => void;
}

const registry = createRegistry(BadRequestSchema, ErrorInfoSchema);

/** Calls `req.method` on the demo service with `protocol`. Never throws: errors are results. */
export async function call(protocol: ProtocolId, req: CallRequest): Promise<CallResult> {
  const meter = newMeter();
  if (protocol === "grpc-web-text") return callGrpcWebText(req, meter);
  const baseUrl = location.origin;
  const fetch = meteredFetch(meter);
  const transport: Transport =
    protocol === "grpc-web"
      ? createGrpcWebTransport({ baseUrl, fetch })
      : createConnectTransport({ baseUrl, fetch, useBinaryFormat: protocol === "connect-proto" });
  return callConnectWeb(transport, req, meter);
}

// --- @connectrpc/connect-web -------------------------------------------------------------------

async function callConnectWeb(transport: Transport, req: CallRequest, meter: Meter): Promise<CallResult> {
  const client = createClient(DemoService, transport) as unknown as Record<
    string,
    (input: Message, options: object) => unknown
  >;
  const result: CallResult = { headers: {}, trailers: {}, meter };
  const options = {
    headers: req.headers,
    timeoutMs: req.timeoutMs,
    onHeader: (h: Headers) => (result.headers = demoHeaders(h)),
    onTrailer: (t: Headers) => (result.trailers = demoHeaders(t)),
  };
  const fn = client[req.method.localName];
  if (fn === undefined) throw new Error(`no method ${req.method.localName}`);
  try {
    if (req.method.methodKind === "server_streaming") {
      for await (const m of fn(req.input, options) as AsyncIterable<Message>) req.onMessage(m);
    } else {
      req.onMessage(await (fn(req.input, options) as Promise<Message>));
    }
  } catch (e) {
    const err = ConnectError.from(e);
    // An error's metadata holds the headers and trailers that came with it.
    if (Object.keys(result.trailers).length === 0) result.trailers = demoHeaders(err.metadata);
    result.error = {
      code: codeName(err.code),
      codeNumber: err.code,
      message: err.rawMessage,
      details: err.findDetails(registry).map(describeDetail),
    };
  }
  return result;
}

// --- Google's grpc-web (text mode) -------------------------------------------------------------

const grpcWebText = new grpcWeb.GrpcWebClientBase({ format: "text" });

// The MethodDescriptor wants message classes; with @bufbuild/protobuf the (de)serializers do
// all the work, so these only fill the slots.
class Untyped {}

function callGrpcWebText(req: CallRequest, meter: Meter): Promise<CallResult> {
  const { method } = req;
  const path = `/${method.parent.typeName}/${method.name}`;
  const streaming = method.methodKind === "server_streaming";
  const descriptor = new grpcWeb.MethodDescriptor<Message, Message>(
    path,
    streaming ? grpcWeb.MethodType.SERVER_STREAMING : grpcWeb.MethodType.UNARY,
    Untyped as never,
    Untyped as never,
    (m: Message) => toBinary(method.input, m as never),
    (bytes: Uint8Array) => fromBinary(method.output, bytes),
  );
  const metadata: grpcWeb.Metadata = { ...req.headers };
  if (req.timeoutMs !== undefined) metadata["deadline"] = String(Date.now() + req.timeoutMs);
  const url = location.origin + path;
  const result: CallResult = { headers: {}, trailers: {}, meter };
  return new Promise((resolve) => {
    let settled = false;
    const finish = (err?: grpcWeb.RpcError) => {
      if (settled) return;
      settled = true;
      if (err) {
        if (Object.keys(result.trailers).length === 0) result.trailers = demoHeaders(err.metadata ?? {});
        result.error = {
          code: codeName(err.code as number as Code),
          codeNumber: err.code,
          message: err.message,
          details: grpcWebDetails(err.metadata ?? {}),
        };
      }
      resolve(result);
    };
    const stream = withXhrMeter(meter, () =>
      streaming
        ? grpcWebText.serverStreaming(url, req.input, metadata, descriptor)
        : grpcWebText.rpcCall(url, req.input, metadata, descriptor, (err, response) => {
            if (err) finish(err);
            else {
              req.onMessage(response);
              finish();
            }
          }),
    );
    stream.on("metadata", (h) => (result.headers = demoHeaders(h)));
    stream.on("status", (s) => {
      if (s.metadata) result.trailers = demoHeaders(s.metadata);
    });
    if (streaming) {
      stream.on("data", (m) => req.onMessage(m));
      stream.on("error", (err) => finish(err));
      stream.on("end", () => finish());
    }
  });
}

/** Details from the `grpc-status-details-bin` trailer (a google.rpc.Status), as grpc-web has no API for them. */
export function grpcWebDetails(metadata: grpcWeb.Metadata): Detail[] {
  const bin = metadata["grpc-status-details-bin"];
  if (!bin) return [];
  try {
    const status = fromBinary(StatusSchema, base64Decode(bin));
    return status.details.map((any) => {
      const message = anyUnpack(any, registry);
      return message ? describeDetail(message) : { type: any.typeUrl.replace(/^.*\//, ""), lines: [] };
    });
  } catch {
    return [{ type: "grpc-status-details-bin", lines: ["(cannot decode)"] }];
  }
}

// --- Shared --------------------------------------------------------------------------------------

function describeDetail(m: Message): Detail {
  if (m.$typeName === BadRequestSchema.typeName) {
    const br = m as BadRequest;
    return {
      type: m.$typeName,
      lines: br.fieldViolations.map((v) => `${v.field}: ${v.description}`),
    };
  }
  return { type: m.$typeName, lines: [] };
}

/** `Code.InvalidArgument` → "invalid_argument". */
export function codeName(code: Code): string {
  const name = Code[code] as string | undefined;
  if (name === undefined) return `code_${code}`;
  return name.replace(/[A-Z]/g, (c, i: number) => (i > 0 ? "_" : "") + c.toLowerCase());
}

/** The `x-demo-*` entries of a header set, sorted by name. */
export function demoHeaders(h: Headers | grpcWeb.Metadata): Record<string, string> {
  const out: Record<string, string> = {};
  const entries: [string, string][] = h instanceof Headers ? [...h.entries()] : Object.entries(h);
  for (const [k, v] of entries.sort(([a], [b]) => a.localeCompare(b))) {
    const name = k.toLowerCase();
    if (name.startsWith("x-demo-")) out[name] = v;
  }
  return out;
}
