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

It also serves switchboard.testing.v1.LibraryService (library.proto, the annotated service of
the REST tests; as tests/integration/support/library.rs does) and gRPC server reflection
(grpcio-reflection: v1alpha), so a proxy finds the services' google.api.http rules by itself.

    python3 tests/interop/backends/grpcio_server.py [--listen HOST:PORT] [--name NAME] [--health]
        [--tls-cert FILE --tls-key FILE [--client-ca FILE]]

The stubs are generated at start-up (grpc_tools.protoc) into a temporary directory. Listens on
127.0.0.1 on an ephemeral port (h2c) unless --listen says otherwise, prints the port as the
first line of stdout once it accepts connections, and exits when its stdin closes.

--name adds the response header `x-backend: NAME` to every answer (which backend answered).
--health also serves grpc.health.v1.Health (grpcio-health-checking), SERVING for the whole
server (""); the lines `not_serving` and `serving` on stdin change that. --tls-cert/--tls-key
serve TLS (ALPN h2) instead of h2c; --client-ca then requires client certificates signed by
that CA (mTLS). Packages: tests/interop/requirements.txt.
"""

import argparse
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
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "..", "proto"))
PROTO_FILES = ["switchboard/testing/v1/testing.proto", "switchboard/testing/v1/library.proto"]

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
        ]
        + [os.path.join(PROTO_ROOT, f) for f in PROTO_FILES]
    )
    if rc != 0:
        raise SystemExit(f"grpcio backend: protoc failed with status {rc}")
    sys.path.insert(0, out_dir)
    pb2 = importlib.import_module("switchboard.testing.v1.testing_pb2")
    pb2_grpc = importlib.import_module("switchboard.testing.v1.testing_pb2_grpc")
    lib = importlib.import_module("switchboard.testing.v1.library_pb2")
    lib_grpc = importlib.import_module("switchboard.testing.v1.library_pb2_grpc")
    return pb2, pb2_grpc, lib, lib_grpc



# Headers the proxy adds to every call; not echoed, so replies compare equal with and without
# a proxy in between.
PROXY_HEADERS = {"x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-real-ip"}

class Status(grpc.Status):
    """A grpc.Status to abort with (grpc.Status is an interface without a constructor)."""

    def __init__(self, code, details, trailing_metadata):
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def make_servicer(pb2, pb2_grpc, backend_name=None):
    def echo_metadata(context):
        headers, trailers = [], []
        if backend_name:
            headers.append(("x-backend", backend_name))
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


def parse_args():
    parser = argparse.ArgumentParser(description="the test service on grpcio")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--name")
    parser.add_argument("--health", action="store_true")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--client-ca")
    return parser.parse_args()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def make_library(lib, lib_grpc):
    """LibraryService: answers made of what the request carried."""
    from google.protobuf import empty_pb2

    def x_metadata(context):
        return {
            name: value
            for name, value in context.invocation_metadata()
            if name.startswith("x-") and name not in PROXY_HEADERS and isinstance(value, str)
        }

    def invalid_shelf(context):
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field="name", description="shelf names are shelves/<id>"
                    )
                ]
            )
        )
        shelf = any_pb2.Any()
        shelf.Pack(lib.Shelf(name="shelves/invalid"))
        unlisted = any_pb2.Any(
            type_url="type.googleapis.com/switchboard.testing.v1.Unlisted", value=b"\x01\x02\x03"
        )
        status = rpc_status.to_status(
            status_pb2.Status(
                code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                message="invalid shelf",
                details=[bad, shelf, unlisted],
            )
        )
        context.abort_with_status(status)

    class Library(lib_grpc.LibraryServiceServicer):
        def GetShelf(self, req, context):
            if req.name == "shelves/missing":
                context.abort(grpc.StatusCode.NOT_FOUND, "no shelf shelves/missing")
            if req.name == "shelves/invalid":
                invalid_shelf(context)
            if req.name == "shelves/slow":
                done = threading.Event()
                context.add_callback(done.set)
                done.wait(2)
            remaining = context.time_remaining()
            timeout = "" if remaining is None or remaining > 10**8 else f"{max(0, round(remaining * 1000))}m"
            return lib.Shelf(
                name=req.name, theme="fiction", metadata=x_metadata(context), grpc_timeout=timeout
            )

        def ListBooks(self, req, context):
            book = lib.Book(name=f"{req.parent}/books/1", title="One")
            return lib.ListBooksResponse(request=req, books=[book], titles=["One", "Two"])

        def CreateBook(self, req, context):
            book = lib.Book()
            book.CopyFrom(req.book)
            book.name = f"{req.parent}/books/{req.book_id}"
            return book

        def UpdateBook(self, req, context):
            book = lib.Book()
            book.CopyFrom(req.book)
            book.note = "update_mask=" + ",".join(req.update_mask.paths)
            return book

        def ReplaceBook(self, req, context):
            return req

        def DeleteBook(self, req, context):
            if req.name.endswith("/missing"):
                context.abort(grpc.StatusCode.NOT_FOUND, f"no book {req.name}")
            return empty_pb2.Empty()

        def MoveBook(self, req, context):
            return lib.Book(name=f"{req.destination}/books/{req.name.rsplit('/', 1)[-1]}")

        def GetFile(self, req, context):
            return lib.File(path=req.path)

        def GetAuthor(self, req, context):
            return lib.Author(author_id=req.author_id)

        def SearchBooks(self, req, context):
            return lib.ListBooksResponse(titles=[req.query] * max(1, req.limit))

        def WatchShelf(self, req, context):
            for i in range(req.count):
                yield lib.ShelfEvent(name=req.name, index=i, payload=b"x" * req.payload_size)
            if req.fail_code:
                context.abort(CODES.get(req.fail_code, grpc.StatusCode.UNKNOWN), "watch failed")

        def Ping(self, req, context):
            return empty_pb2.Empty()

    return Library()


def main():
    args = parse_args()
    out_dir = tempfile.mkdtemp(prefix="switchboard-grpcio-")
    try:
        pb2, pb2_grpc, lib, lib_grpc = generate_stubs(out_dir)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=32),
            options=[
                # No message limit of its own: the proxy's limits are what the tests exercise.
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
            ],
        )
        pb2_grpc.add_TestServiceServicer_to_server(make_servicer(pb2, pb2_grpc, args.name), server)
        lib_grpc.add_LibraryServiceServicer_to_server(make_library(lib, lib_grpc), server)
        reflection.enable_server_reflection(
            (
                pb2.DESCRIPTOR.services_by_name["TestService"].full_name,
                lib.DESCRIPTOR.services_by_name["LibraryService"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        health = None
        if args.health:
            from grpc_health.v1 import health as health_mod
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            health = health_mod.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(health, server)
            statuses = {
                "serving": health_pb2.HealthCheckResponse.SERVING,
                "not_serving": health_pb2.HealthCheckResponse.NOT_SERVING,
            }
            health.set("", statuses["serving"])
        if args.tls_cert:
            ca = read(args.client_ca) if args.client_ca else None
            creds = grpc.ssl_server_credentials(
                [(read(args.tls_key), read(args.tls_cert))],
                root_certificates=ca,
                require_client_auth=ca is not None,
            )
            port = server.add_secure_port(args.listen, creds)
        else:
            port = server.add_insecure_port(args.listen)
        if port == 0:
            raise SystemExit(f"grpcio backend: cannot listen on {args.listen}")
        server.start()
        # The readiness signal: the port, alone on the first line.
        sys.stdout.write(f"{port}\n")
        sys.stdout.flush()
        # Commands until the parent closes our stdin (or dies).
        for line in sys.stdin:
            command = line.strip()
            if health is not None and command in statuses:
                health.set("", statuses[command])
                sys.stdout.write(f"{command}\n")
                sys.stdout.flush()
        server.stop(grace=None)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
