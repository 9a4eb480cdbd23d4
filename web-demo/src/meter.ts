// Bytes on the wire, per call: request and response body bytes as the browser sends and
// receives them (after base64 in gRPC-Web text mode; HTTP headers are not counted).
//
// - connect-web transports take a `fetch` option: each call gets its own transport whose fetch
//   counts the request body and wraps the response body in a counting stream.
// - Google's grpc-web client uses XMLHttpRequest. It opens and sends its request synchronously
//   inside the call, so the meter that is "current" during that call is attached to the XHR.

export interface Meter {
  /** Request body bytes. */
  sent: number;
  /** Response body bytes received so far. */
  received: number;
  /** The request's content-type, as sent. */
  contentType: string;
  /** The HTTP method, as sent. */
  httpMethod: string;
  /** The deadline header, as sent ("connect-timeout-ms: 500", "grpc-timeout: 500m"), or "". */
  timeout: string;
  /** The HTTP status of the response; 0 while (or when) none has arrived. */
  status: number;
}

export function newMeter(): Meter {
  return { sent: 0, received: 0, contentType: "", httpMethod: "", timeout: "", status: 0 };
}

const TIMEOUT_HEADERS = ["connect-timeout-ms", "grpc-timeout"];

const encoder = new TextEncoder();

function bodySize(body: unknown): number {
  if (body == null) return 0;
  if (typeof body === "string") return encoder.encode(body).byteLength;
  if (body instanceof ArrayBuffer) return body.byteLength;
  if (ArrayBuffer.isView(body)) return body.byteLength;
  if (body instanceof Blob) return body.size;
  return 0; // a ReadableStream: not used by unary and server-streaming calls
}

/** A fetch that records what one call sends and receives into `meter`. */
export function meteredFetch(meter: Meter): typeof globalThis.fetch {
  return async (input, init) => {
    meter.sent += bodySize(init?.body);
    meter.httpMethod = init?.method ?? "GET";
    const headers = new Headers(init?.headers);
    meter.contentType = headers.get("content-type") ?? "";
    for (const name of TIMEOUT_HEADERS) {
      const value = headers.get(name);
      if (value !== null) meter.timeout = `${name}: ${value}`;
    }
    const res = await globalThis.fetch(input, init);
    meter.status = res.status;
    if (res.body === null) return res;
    const counted = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          meter.received += chunk.byteLength;
          controller.enqueue(chunk);
        },
      }),
    );
    return new Response(counted, {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
    });
  };
}

let currentXhrMeter: Meter | undefined;
let xhrPatched = false;

/** Runs `start` (which must open and send its XHR synchronously) with `meter` attached. */
export function withXhrMeter<T>(meter: Meter, start: () => T): T {
  patchXhr();
  currentXhrMeter = meter;
  try {
    return start();
  } finally {
    currentXhrMeter = undefined;
  }
}

const meters = new WeakMap<XMLHttpRequest, Meter>();

function patchXhr(): void {
  if (xhrPatched) return;
  xhrPatched = true;
  const proto = XMLHttpRequest.prototype;
  const open = proto.open as (this: XMLHttpRequest, ...args: unknown[]) => void;
  const send = proto.send;
  const setRequestHeader = proto.setRequestHeader;
  proto.open = function (this: XMLHttpRequest, ...args: unknown[]) {
    const meter = currentXhrMeter;
    if (meter !== undefined) {
      meters.set(this, meter);
      meter.httpMethod = String(args[0]);
      const update = (e: ProgressEvent) => {
        meter.received = e.loaded;
      };
      this.addEventListener("progress", update);
      this.addEventListener("load", update);
      this.addEventListener("readystatechange", () => {
        if (this.readyState >= XMLHttpRequest.HEADERS_RECEIVED) meter.status = this.status;
      });
    }
    open.apply(this, args);
  } as typeof proto.open;
  proto.setRequestHeader = function (this: XMLHttpRequest, name: string, value: string) {
    const meter = meters.get(this);
    const lower = name.toLowerCase();
    if (meter !== undefined && lower === "content-type") meter.contentType = value;
    if (meter !== undefined && TIMEOUT_HEADERS.includes(lower)) meter.timeout = `${lower}: ${value}`;
    setRequestHeader.call(this, name, value);
  };
  proto.send = function (this: XMLHttpRequest, body?: Document | XMLHttpRequestBodyInit | null) {
    const meter = meters.get(this);
    if (meter !== undefined) meter.sent += bodySize(body);
    send.call(this, body);
  };
}
