"""The gRPC server: hands request bytes to the Rust core and its answer bytes back.

No protobuf parsing and no arithmetic on money happen here on the hot path; the handlers
take raw bytes (no deserializer) and return raw bytes (no serializer).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Counter, start_http_server

from engine._core import Core, CoreError
from engine.auth import (
    CORE_DOWN_REASON,
    DENIAL_STATUSES,
    AuthInterceptor,
    current_actor,
    denial_counter,
)
from engine.errors import REPLAYED_METADATA, abort_with_core_error
from engine.metrics import CoreCollector, GrpcMetrics, MetricsInterceptor
from engine.proto import (
    admin_pb2,
    auth_pb2,
    card_pb2,
    catalog_pb2,
    chain_pb2,
    config_pb2,
    coupon_pb2,
    member_pb2,
    points_pb2,
    transaction_pb2,
)
from engine.tls import ServerTls, is_loopback, peer_terminal

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_METRICS_PORT = 9464
WORKERS_DEFAULT = 64
# RPCs in progress at most (running or waiting for a worker); past it grpc answers
# RESOURCE_EXHAUSTED at once instead of queueing without bound. A client retries with the
# same request_id.
CONCURRENT_RPCS_MAX = 1024
# A config of 10,000 stores is well under this; anything larger is refused by grpc.
MESSAGE_BYTES_MAX = 8 * 1024 * 1024
SHUTDOWN_GRACE_SECONDS = 15.0

# Services whose every method the core serves, request bytes in, response bytes out.
CORE_SERVICES = (
    config_pb2.DESCRIPTOR.services_by_name["ConfigService"],
    member_pb2.DESCRIPTOR.services_by_name["MemberService"],
    transaction_pb2.DESCRIPTOR.services_by_name["TransactionService"],
    card_pb2.DESCRIPTOR.services_by_name["CardService"],
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"],
    chain_pb2.DESCRIPTOR.services_by_name["ChainService"],
    points_pb2.DESCRIPTOR.services_by_name["PointsService"],
    coupon_pb2.DESCRIPTOR.services_by_name["CouponService"],
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
    auth_pb2.DESCRIPTOR.services_by_name["AuditService"],
)
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]


def _core_handler(
    core: Core,
    method: Any,
    on_core_down: Callable[[], None],
    replays: Counter,
    denied: Counter,
) -> grpc.RpcMethodHandler:
    service_name = method.containing_service.full_name
    full_name = f"/{service_name}/{method.name}"
    replayed_here = replays.labels(service_name, method.name)

    def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            response, replayed = core.submit(full_name, current_actor(), request)
        except CoreError as error:
            if error.reason == CORE_DOWN_REASON:
                on_core_down()
            if error.replayed:
                replayed_here.inc()
            if error.status in DENIAL_STATUSES:
                denied.labels(service_name, method.name, error.reason.lower()).inc()
            abort_with_core_error(context, error)
            raise AssertionError("abort returns only by raising") from error
        if replayed:
            replayed_here.inc()
            context.set_trailing_metadata((REPLAYED_METADATA,))
        return response

    return grpc.unary_unary_rpc_method_handler(handle)


def _backup_handler(core: Core) -> grpc.RpcMethodHandler:
    def backup(request: admin_pb2.BackupRequest, context: grpc.ServicerContext) -> Any:
        if not request.destination_dir:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "destination_dir is required")
        try:
            path, size = core.backup(os.path.abspath(request.destination_dir))
        except CoreError as error:
            abort_with_core_error(context, error)
            raise AssertionError("abort returns only by raising") from error
        return admin_pb2.BackupResponse(path=path, size_bytes=size)

    return grpc.unary_unary_rpc_method_handler(
        backup,
        request_deserializer=admin_pb2.BackupRequest.FromString,
        response_serializer=admin_pb2.BackupResponse.SerializeToString,
    )


def _generic_handlers(
    core: Core, on_core_down: Callable[[], None], replays: Counter, denied: Counter
) -> list[grpc.GenericRpcHandler]:
    handlers = []
    for service in CORE_SERVICES:
        methods = {
            method.name: _core_handler(core, method, on_core_down, replays, denied)
            for method in service.methods
        }
        handlers.append(grpc.method_handlers_generic_handler(service.full_name, methods))
    admin = {"Backup": _backup_handler(core)}
    handlers.append(grpc.method_handlers_generic_handler(ADMIN_SERVICE.full_name, admin))
    return handlers


def create_server(
    core: Core,
    address: str,
    *,
    registry: CollectorRegistry,
    workers: int = WORKERS_DEFAULT,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Builds the server (not started). Returns it, the bound port and its health servicer.
    With `credentials` the port speaks TLS only (engine/tls.py), else plaintext only."""
    health_servicer = health.HealthServicer()
    names = [service.full_name for service in (*CORE_SERVICES, ADMIN_SERVICE)]

    def set_health(status: int) -> None:
        for name in [*names, ""]:
            health_servicer.set(name, status)

    # The core answers SHUTTING_DOWN outside a shutdown only when its writer has stopped
    # (a failed assertion): load balancers must stop sending work here.
    def on_core_down() -> None:
        set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    denied = denial_counter(registry)
    options = [
        ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
        ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
        ("grpc.so_reuseport", 0),
    ]
    # Metrics outermost, so calls the auth interceptor refuses are counted too.
    interceptors = [
        MetricsInterceptor(GrpcMetrics(registry)),
        # With mutual TLS the terminal is the client certificate's CN, not what the
        # client says in mms-terminal.
        AuthInterceptor(core, denied, on_core_down, terminal_of=peer_terminal),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mms-grpc"),
        interceptors=interceptors,
        options=options,
        maximum_concurrent_rpcs=CONCURRENT_RPCS_MAX,
    )
    replays = Counter(
        "mms_requests_replayed_total",
        "Requests answered with the first answer to the same request_id (client retries).",
        ["grpc_service", "grpc_method"],
        registry=registry,
    )
    handlers = _generic_handlers(core, on_core_down, replays, denied)
    server.add_generic_rpc_handlers(handlers)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    set_health(health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port, health_servicer


def _stop_on_signal() -> threading.Event:
    """SIGTERM and SIGINT set the returned event. Installed before the server says it
    listens, so a signal right after that line is a graceful stop, not a kill."""
    stop = threading.Event()
    handler: Callable[[int, Any], None] = lambda signum, frame: stop.set()  # noqa: E731
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def serve(
    *,
    data_dir: str = "./data",
    listen: str = DEFAULT_LISTEN,
    metrics_port: int = DEFAULT_METRICS_PORT,
    durable: bool = True,
    workers: int = WORKERS_DEFAULT,
    clock_file: str | None = None,
    tls: ServerTls | None = None,
) -> int:
    """Runs the server until SIGTERM or SIGINT, then shuts down without losing anything
    acknowledged: health goes NOT_SERVING, in-flight calls finish, the writer drains.

    `clock_file` is for tests: the server's time is read from that file (integer
    milliseconds since 1970) at every request instead of from the system clock.

    `tls`: its files are read and checked first, before the data folder is opened; one
    that cannot be used raises engine.tls.TlsError naming it."""
    credentials = tls.credentials() if tls is not None else None
    stop = _stop_on_signal()
    core = Core(data_dir, durable=durable, clock_file=clock_file)
    registry = CollectorRegistry()
    registry.register(CoreCollector(core))
    server, port, health_servicer = create_server(
        core,
        listen,
        registry=registry,
        workers=workers,
        credentials=credentials,
    )
    host = listen.rpartition(":")[0] or "127.0.0.1"
    metrics_server, _ = start_http_server(metrics_port, addr=host.strip("[]"), registry=registry)
    server.start()
    mode = "durable" if durable else "NO-SYNC (benchmarks only: a crash may lose commits)"
    print(f"mms: data in {os.path.abspath(data_dir)} ({mode})", flush=True)
    if clock_file is not None:
        print(f"mms: TEST CLOCK: the time is read from {os.path.abspath(clock_file)}", flush=True)
    security = tls.describe() if tls is not None else "plaintext"
    print(f"mms: serving gRPC on {host}:{port} ({security})", flush=True)
    if tls is None and not is_loopback(listen):
        print(
            f"mms: WARNING: plaintext gRPC on {listen}, not loopback: whoever can reach the "
            "port can read and send its traffic; give --tls-cert and --tls-key",
            file=sys.stderr,
            flush=True,
        )
    print(f"mms: metrics on http://{host}:{metrics_server.server_port}/metrics", flush=True)
    try:
        while not stop.wait(3600):
            pass
    finally:
        print("mms: shutting down", flush=True)
        health_servicer.enter_graceful_shutdown()
        server.stop(SHUTDOWN_GRACE_SECONDS).wait()
        core.close()
        metrics_server.shutdown()
        print("mms: stopped", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - `mms serve` is the entry point
    sys.exit(serve())
