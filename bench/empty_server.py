"""Bench-only server: the engine's own gRPC stack (`engine.server.create_server`: the same
grpcio server, thread pool, options, metrics and auth interceptors as `mms serve`) with one
more method, `/mms.bench.v1.Bench/Empty`, which answers empty bytes at once. The ceiling of
the front: what an RPC costs on this stack with no engine work behind it.

Authentication is part of that front: the Empty call goes through the same
`AuthInterceptor`, which reads `authorization: Bearer mms_...` and has the core verify the
token (SHA-256, token and staff lookups, the role against the method) before the handler
runs. The core knows only the engine's methods (it refuses any other name as
UNKNOWN_METHOD before looking at the token), so the core given to the stack passes the
Empty call to `Core.authenticate` as a Checkout: the very check the end-to-end checkout
it is compared with pays. The token is that of an admin bootstrapped on this server's temp
core, saved to `--token-file` (mode 0600) before the server says it listens.

It lives in bench/, which is not part of the installed package, so it never ships.

    .venv/bin/python bench/empty_server.py --token-file FILE [--listen 127.0.0.1:0]
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from typing import Any, cast

import common
import grpc
from prometheus_client import CollectorRegistry

from engine._core import Actor, Core
from engine.server import create_server

SERVICE = "mms.bench.v1.Bench"


def _empty(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b""


class _AuthenticatesEmptyAsCheckout:
    """The core, but `authenticate` takes the Empty method for a Checkout (the core has no
    such method); everything else goes to the core itself."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._authenticate = core.authenticate

    def authenticate(self, token: str, method: str, **options: str) -> Actor:
        if method == common.EMPTY_METHOD:
            method = common.CHECKOUT_METHOD
        return self._authenticate(token, method, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument(
        "--token-file", required=True, help="where the admin's token is saved (mode 0600)"
    )
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="mms-bench-empty-") as scratch:
        core = Core(scratch, durable=False)
        common.write_token(args.token_file, common.admin_token(core))
        stack_core = cast(Core, _AuthenticatesEmptyAsCheckout(core))
        server, port, _ = create_server(stack_core, args.listen, registry=CollectorRegistry())
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
