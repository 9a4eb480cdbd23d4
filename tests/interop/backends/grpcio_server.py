#!/usr/bin/env python3
"""The test service (proto/switchboard/testing/v1/testing.proto) implemented with Python grpcio,
with the same behaviour as the tonic backend of the integration tests
(tests/integration/support/backend.rs):

- Unary / Lookup: wait delay_ms, then fail with `error` (with_details adds a
  google.rpc.BadRequest in grpc-status-details-bin) or echo the request;
- ServerStream: `count` responses delay_ms apart, then `error` if set;
- ClientStream: one response, the messages joined by "," and the payloads concatenated;
- Bidi: one response per request, as each arrives;
- metadata echo: request header x-header-NAME comes back as a response header, x-trailer-NAME
  as a trailer (both in the trailers of an error sent before any message, as tonic does).

    python3 tests/interop/backends/grpcio_server.py

The stubs are generated at start-up (grpc_tools.protoc) into a temporary directory. Listens on
127.0.0.1 on an ephemeral port (h2c), prints the port as the first line of stdout once it
accepts connections, and exits when its stdin closes. Packages: tests/interop/requirements.txt.
"""

import importlib
import os
import shutil
import sys
import tempfile
import threading
from concurrent import futures

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "..", "proto"))
PROTO_FILE = "switchboard/testing/v1/testing.proto"

CODES = {code.value[0]: code for code in grpc.StatusCode}


def generate_stubs(out_dir):
    """Runs protoc (grpcio-tools' bundled copy) and imports the generated modules."""
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            os.path.join(PROTO_ROOT, PROTO_FILE),
        ]
    )
    if rc != 0:
        raise SystemExit(f"grpcio backend: protoc failed with status {rc}")
    sys.path.insert(0, out_dir)
    pb2 = importlib.import_module("switchboard.testing.v1.testing_pb2")
    pb2_grpc = importlib.import_module("switchboard.testing.v1.testing_pb2_grpc")
    return pb2, pb2_grpc



# Headers the proxy adds to every call; not echoed, so replies compare equal with and without
# a proxy in between.
PROXY_HEADERS = {"x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-real-ip"}

class Status(grpc.Status):
    """A grpc.Status to abort with (grpc.Status is an interface without a constructor)."""

    def __init__(self, code, details, trailing_metadata):
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def make_servicer(pb2, pb2_grpc):
    def echo_metadata(context):
        headers, trailers = [], []
        for name, value in context.invocation_metadata():
            if name.startswith("x-header-"):
                headers.append((name, value))
            elif name.startswith("x-trailer-"):
                trailers.append((name, value))
        return headers, trailers

    def grpc_timeout(context):
        # grpcio consumes the grpc-timeout header; rebuild it, in milliseconds, from the
        # deadline it set. Empty when the call has none.
        remaining = context.time_remaining()
        if remaining is None or remaining > 10**8:
            return ""
        return f"{max(0, round(remaining * 1000))}m"

    def x_metadata(context):
        return {
            name: value
            for name, value in context.invocation_metadata()
            if name.startswith("x-") and name not in PROXY_HEADERS and isinstance(value, str)
        }

    def respond(req, index, context, timeout):
        payload = b"x" * req.response_size if req.response_size > 0 else req.payload
        return pb2.EchoResponse(
            message=req.message,
            payload=payload,
            index=index,
            grpc_timeout=timeout,
            metadata=x_metadata(context),
        )

    def abort(context, spec, trailers):
        """Ends the call with the status `spec` (an ErrorSpec) and `trailers`."""
        code = CODES.get(spec.code, grpc.StatusCode.UNKNOWN)
        if spec.with_details:
            detail = any_pb2.Any()
            detail.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field="message", description="must not be empty"
                        )
                    ]
                )
            )
            status = rpc_status.to_status(
                status_pb2.Status(code=spec.code, message=spec.message, details=[detail])
            )
            context.abort_with_status(
                Status(status.code, status.details, tuple(trailers) + status.trailing_metadata)
            )
        context.set_trailing_metadata(tuple(trailers))
        context.abort(code, spec.message)

    def wait(context, ms):
        """Waits `ms`; returns False early when the call is cancelled or its deadline passed."""
        if ms <= 0:
            return True
        done = threading.Event()
        context.add_callback(done.set)
        return not done.wait(ms / 1000)

    class TestService(pb2_grpc.TestServiceServicer):
        def _answer_once(self, req, context):
            timeout = grpc_timeout(context)
            headers, trailers = echo_metadata(context)
            if not wait(context, req.delay_ms):
                return pb2.EchoResponse()
            if req.HasField("error"):
                # Before any message: the echoed headers go with the trailers.
                abort(context, req.error, headers + trailers)
            context.send_initial_metadata(tuple(headers))
            context.set_trailing_metadata(tuple(trailers))
            return respond(req, 0, context, timeout)

        def Unary(self, req, context):
            return self._answer_once(req, context)

        def Lookup(self, req, context):
            return self._answer_once(req, context)

        def ServerStream(self, req, context):
            timeout = grpc_timeout(context)
            headers, trailers = echo_metadata(context)
            context.send_initial_metadata(tuple(headers))
            for i in range(req.count):
                if not wait(context, req.delay_ms):
                    return
                yield respond(req, i, context, timeout)
            if req.HasField("error"):
                abort(context, req.error, trailers)
            context.set_trailing_metadata(tuple(trailers))

        def ClientStream(self, request_iterator, context):
            timeout = grpc_timeout(context)
            headers, trailers = echo_metadata(context)
            messages, payload = [], b""
            for req in request_iterator:
                messages.append(req.message)
                payload += req.payload
            joined = pb2.EchoRequest(message=",".join(messages), payload=payload)
            context.send_initial_metadata(tuple(headers))
            context.set_trailing_metadata(tuple(trailers))
            return respond(joined, 0, context, timeout)

        def Bidi(self, request_iterator, context):
            timeout = grpc_timeout(context)
            headers, trailers = echo_metadata(context)
            context.send_initial_metadata(tuple(headers))
            for i, req in enumerate(request_iterator):
                if req.HasField("error"):
                    abort(context, req.error, trailers)
                yield respond(req, i, context, timeout)
            context.set_trailing_metadata(tuple(trailers))

    return TestService()


def main():
    out_dir = tempfile.mkdtemp(prefix="switchboard-grpcio-")
    try:
        pb2, pb2_grpc = generate_stubs(out_dir)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=32),
            options=[
                # No message limit of its own: the proxy's limits are what the tests exercise.
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
            ],
        )
        pb2_grpc.add_TestServiceServicer_to_server(make_servicer(pb2, pb2_grpc), server)
        port = server.add_insecure_port("127.0.0.1:0")
        if port == 0:
            raise SystemExit("grpcio backend: cannot listen on 127.0.0.1")
        server.start()
        # The readiness signal: the port, alone on the first line.
        sys.stdout.write(f"{port}\n")
        sys.stdout.flush()
        # Stop with the parent: it holds our stdin and closes it (or dies).
        sys.stdin.buffer.read()
        server.stop(grace=None)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
