"""grpc.health.v1 client (grpcio's generated stubs from grpcio-health-checking).

    python3 health_check.py check HOST:PORT [SERVICE]   prints the status once
    python3 health_check.py watch HOST:PORT [SERVICE]   prints each status as it arrives and
                                                        exits after NOT_SERVING (or 20 s)

One status name per line (SERVING, NOT_SERVING, ...), flushed at once; errors go to stderr
with exit code 2.
"""

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    mode, address = sys.argv[1], sys.argv[2]
    service = sys.argv[3] if len(sys.argv) > 3 else ""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            if mode == "check":
                reply = stub.Check(request, timeout=10)
                print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), flush=True)
                return 0
            for reply in stub.Watch(request, timeout=20):
                name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                print(name, flush=True)
                if name == "NOT_SERVING":
                    return 0
        except grpc.RpcError as e:
            print(f"{e.code().name}: {e.details()}", file=sys.stderr, flush=True)
            return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
