// Client streaming and bidi from any browser: improbable-eng's grpc-web client with its
// WebSocket transport (subprotocol grpc-websockets), through Switchboard like every other call.
// fetch cannot stream a request body in most browsers; a WebSocket can, so the chat and
// upload panels use it in every protocol tab.

import { fromBinary, toBinary, type DescMethod, type Message } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { grpc } from "@improbable-eng/grpc-web";

import { newMeter, type Meter } from "./meter";
import { codeName, demoHeaders, grpcWebDetails, type CallResult } from "./protocols";

/** An open call: send messages, finish sending, or cancel; `result` settles at its end. */
export interface SocketCall {
  send(message: Message): void;
  finish(): void;
  cancel(): void;
  result: Promise<CallResult>;
}

/** A WebSocket transport that counts the bytes the call sends and receives. */
function meteredTransport(meter: Meter): grpc.TransportFactory {
  const inner = grpc.WebsocketTransport();
  return (opts) => {
    const transport = inner({
      ...opts,
      onChunk: (bytes, flush) => {
        meter.received += bytes.byteLength;
        // The socket is open once anything came back: the upgrade was answered 101.
        meter.status = 101;
        opts.onChunk(bytes, flush);
      },
    });
    return {
      ...transport,
      sendMessage: (bytes) => {
        meter.sent += bytes.byteLength + 1; // and the control byte
        transport.sendMessage(bytes);
      },
    };
  };
}

/** The improbable client's method definition, with message "classes" over @bufbuild/protobuf. */
function methodDefinition(method: DescMethod) {
  class Request {
    constructor(readonly message: Message) {}
    serializeBinary(): Uint8Array {
      return toBinary(method.input, this.message as never);
    }
    toObject(): object {
      return {};
    }
  }
  class Response {
    constructor(readonly message: Message) {}
    serializeBinary(): Uint8Array {
      return toBinary(method.output, this.message as never);
    }
    toObject(): object {
      return {};
    }
    static deserializeBinary(bytes: Uint8Array): Response {
      return new Response(fromBinary(method.output, bytes));
    }
  }
  const kind = method.methodKind;
  const def = {
    methodName: method.name,
    service: { serviceName: method.parent.typeName },
    requestStream: kind === "client_streaming" || kind === "bidi_streaming",
    responseStream: kind === "server_streaming" || kind === "bidi_streaming",
    requestType: Request,
    responseType: Response,
  };
  return { def, Request };
}

/** Opens a call of `method` over a WebSocket. */
export function openSocket(
  method: DescMethod,
  headers: Record<string, string>,
  onMessage: (message: Message) => void,
): SocketCall {
  const meter = newMeter();
  meter.httpMethod = "WebSocket";
  meter.contentType = "grpc-websockets";
  const { def, Request } = methodDefinition(method);
  const client = grpc.client(def as never, {
    host: location.origin,
    transport: meteredTransport(meter),
  });
  const result: CallResult = { headers: {}, trailers: {}, meter };
  let finished = false;
  const done = new Promise<CallResult>((resolve) => {
    client.onHeaders((h) => (result.headers = demoHeaders(metadataObject(h))));
    client.onMessage((m) => onMessage((m as unknown as { message: Message }).message));
    client.onEnd((code, message, trailers) => {
      const t = metadataObject(trailers);
      result.trailers = demoHeaders(t);
      if (code !== grpc.Code.OK) {
        result.error = {
          code: codeName(code as number as Code),
          codeNumber: code,
          message,
          details: grpcWebDetails(t),
        };
      }
      resolve(result);
    });
  });
  client.start(new grpc.Metadata(headers));
  return {
    send: (m) => client.send(new Request(m) as never),
    finish: () => {
      if (!finished) {
        finished = true;
        client.finishSend();
      }
    },
    cancel: () => client.close(),
    result: done,
  };
}

/** Metadata as a plain object of first values. */
function metadataObject(md: grpc.Metadata): Record<string, string> {
  const out: Record<string, string> = {};
  md.forEach((key, values) => {
    if (values[0] !== undefined) out[key.toLowerCase()] = values[0];
  });
  return out;
}
