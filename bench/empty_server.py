"""Bench-only server: the engine's own gRPC stack (`engine.server.create_server`: the same
grpcio server, thread pool, options and metrics interceptor as `mms serve`) with one more
method, `/mms.bench.v1.Bench/Empty`, which answers empty bytes at once. The ceiling of the
front: what an RPC costs on this stack with no engine work behind it.

It lives in bench/, which is not part of the installed package, so it never ships.

    .venv/bin/python bench/empty_server.py [--listen 127.0.0.1:0]
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading

import common  # noqa: F401  (puts the repository on sys.path)
import grpc
from prometheus_client import CollectorRegistry

from engine._core import Core
from engine.server import create_server

SERVICE = "mms.bench.v1.Bench"


def _empty(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="mms-bench-empty-") as scratch:
        core = Core(scratch, durable=False)
        server, port, _ = create_server(core, args.listen, registry=CollectorRegistry())
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    SERVICE, {"Empty": grpc.unary_unary_rpc_method_handler(_empty)}
                )
            ]
        )
        server.start()
        host = args.listen.rpartition(":")[0]
        print(f"bench empty server: serving gRPC on {host}:{port}", flush=True)
        stop.wait()
        server.stop(5).wait()
        core.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
