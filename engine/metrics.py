"""Prometheus metrics: gRPC server metrics under the names community dashboards read
(grpc_server_*), and the core's writer and LMDB map statistics.

Labels are low-cardinality only: service, method, type, code. Never a member, card or phone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from engine._core import Core

# Latency buckets in seconds: a checkout waits for one group commit (an fsync).
HANDLING_SECONDS_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class GrpcMetrics:
    """The grpc_server_* family, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter(
            "grpc_server_started_total", "RPCs started on the server.", labels, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, regardless of success or failure.",
            [*labels, "grpc_code"],
            registry=registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server, in seconds.",
            labels,
            buckets=HANDLING_SECONDS_BUCKETS,
            registry=registry,
        )


# grpc_code values as go-grpc-prometheus writes them (Go's codes.Code.String()), which is
# what the community's dashboards and alert rules match on.
_GO_CODE_NAMES = {
    code: "".join(part.capitalize() for part in code.name.split("_")) for code in grpc.StatusCode
}
_GO_CODE_NAMES[grpc.StatusCode.OK] = "OK"
_GO_CODE_NAMES[grpc.StatusCode.CANCELLED] = "Canceled"  # Go's spelling


def code_label(code: grpc.StatusCode) -> str:
    """The grpc_code label of a status: "OK", "InvalidArgument", "Canceled" ..."""
    return _GO_CODE_NAMES[code]


def _code_name(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code()
    if code is None:
        return code_label(grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK)
    return code_label(code) if isinstance(code, grpc.StatusCode) else str(code)


class _MethodMetrics:
    """The grpc_server_* children of one method, looked up once: `labels()` takes a lock and
    builds a key on every call, which a hot method would pay three times per RPC."""

    __slots__ = ("_handled", "_handled_by_code", "_labels", "handling_seconds", "started")

    def __init__(self, metrics: GrpcMetrics, labels: tuple[str, str, str]) -> None:
        self._labels = labels
        self._handled = metrics.handled
        # One child per grpc_code seen, at most one per status code.
        self._handled_by_code: dict[str, Any] = {}
        self.started = metrics.started.labels(*labels)
        self.handling_seconds = metrics.handling_seconds.labels(*labels)

    def finish(self, started: float, code: str) -> None:
        self.handling_seconds.observe(time.perf_counter() - started)
        handled = self._handled_by_code.get(code)
        if handled is None:
            handled = self._handled.labels(*self._labels, code)
            self._handled_by_code[code] = handled
        handled.inc()


class WrappedHandlers:
    """Per method, the handler grpc's continuation gave and its wrapped form, reused while
    the continuation gives the same handler: grpc asks interceptors on every call, and a
    new wrapper per call costs closures (and the next interceptor out its own cache).
    Only known methods get here (grpc has no handler for others), so the dict is bounded
    by the services."""

    def __init__(self, wrap: Callable[[Any, str], Any]) -> None:
        self._wrap = wrap
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def get(self, handler: Any, full_name: str) -> Any:
        cached = self._wrapped.get(full_name)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, full_name)
        self._wrapped[full_name] = (handler, wrapped)
        return wrapped


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts and times every RPC of a known method. Install it first (outermost), so
    calls refused by later interceptors are counted too."""

    def __init__(self, metrics: GrpcMetrics) -> None:
        self.metrics = metrics
        self._handlers = WrappedHandlers(self._wrap)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            # Unknown methods are answered UNIMPLEMENTED by grpc; their names come from
            # clients, so they never become label values.
            return None
        return self._handlers.get(handler, handler_call_details.method)

    def _wrap(self, handler: Any, full_name: str) -> Any:
        service, _, method = full_name.lstrip("/").rpartition("/")
        if handler.unary_unary is not None:
            labels = ("unary", service, method)
            return handler._replace(unary_unary=self._wrap_unary(handler.unary_unary, labels))
        if handler.unary_stream is not None:
            labels = ("server_stream", service, method)
            return handler._replace(unary_stream=self._wrap_stream(handler.unary_stream, labels))
        if handler.stream_unary is not None:
            labels = ("client_stream", service, method)
            return handler._replace(stream_unary=self._wrap_unary(handler.stream_unary, labels))
        labels = ("bidi_stream", service, method)
        return handler._replace(stream_stream=self._wrap_stream(handler.stream_stream, labels))

    def _wrap_unary(self, behavior: Callable[..., Any], labels: tuple[str, str, str]):
        children = _MethodMetrics(self.metrics, labels)

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            children.started.inc()
            started = time.perf_counter()
            try:
                response = behavior(request, context)
            except BaseException:
                children.finish(started, _code_name(context, failed=True))
                raise
            children.finish(started, _code_name(context, failed=False))
            return response

        return wrapped

    def _wrap_stream(self, behavior: Callable[..., Any], labels: tuple[str, str, str]):
        if getattr(behavior, "experimental_non_blocking", False):
            return self._wrap_non_blocking_stream(behavior, labels)

        children = _MethodMetrics(self.metrics, labels)

        # The call that creates the iterator is not the RPC: the RPC ends when the
        # iterator does, so the iterator itself is wrapped.
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            children.started.inc()
            started = time.perf_counter()
            try:
                yield from behavior(request, context)
            except GeneratorExit:  # the client went away
                children.finish(started, code_label(grpc.StatusCode.CANCELLED))
                raise
            except BaseException:
                children.finish(started, _code_name(context, failed=True))
                raise
            children.finish(started, _code_name(context, failed=False))

        return wrapped

    def _wrap_non_blocking_stream(
        self, behavior: Callable[..., Any], labels: tuple[str, str, str]
    ) -> Callable[..., Any]:
        """A stream that answers through a callback and returns at once (grpc's
        experimental_non_blocking, as the health service's Watch): it holds no worker
        thread, and must not be made to. It ends when the servicer sends None, or when
        the RPC terminates first (the client cancelled)."""

        children = _MethodMetrics(self.metrics, labels)

        def wrapped(request: Any, context: grpc.ServicerContext, send_response: Any) -> Any:
            children.started.inc()
            started = time.perf_counter()
            ended = threading.Lock()

            def finish(code: str) -> None:
                if ended.acquire(blocking=False):
                    children.finish(started, code)

            def send(response: Any) -> None:
                if response is None:
                    finish(_code_name(context, failed=False))
                send_response(response)

            def terminated() -> None:
                code = context.code()
                finish(
                    code_label(code) if code is not None else code_label(grpc.StatusCode.CANCELLED)
                )

            if not context.add_callback(terminated):  # the RPC has already ended
                terminated()
                return None
            return behavior(request, context, send)

        wrapped.experimental_non_blocking = True  # type: ignore[attr-defined]
        wrapped.experimental_thread_pool = getattr(behavior, "experimental_thread_pool", None)  # type: ignore[attr-defined]
        return wrapped


def micros_as_seconds_text(micros: int) -> str:
    """Exact decimal seconds for a bucket bound: 100 -> "0.0001", 1_000_000 -> "1"."""
    whole, fraction = divmod(micros, 1_000_000)
    return f"{whole}.{fraction:06d}".rstrip("0").rstrip(".")


def _histogram(
    name: str,
    documentation: str,
    bound_labels: list[str],
    buckets: list[int],
    total: float,
) -> HistogramMetricFamily:
    """A histogram from the core's per-bucket (non-cumulative) counts."""
    family = HistogramMetricFamily(name, documentation)
    cumulative = 0
    points = []
    for bound, count in zip(bound_labels, buckets, strict=False):
        cumulative += count
        points.append((bound, cumulative))
    cumulative += buckets[-1]
    points.append(("+Inf", cumulative))
    family.add_metric([], points, sum_value=total)
    return family


class CoreCollector(Collector):
    """Reads the core's writer and map statistics at scrape time."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def collect(self) -> Iterator[Any]:
        try:
            stats = self.core.stats()
        except Exception:  # the core is closing: a scrape during shutdown shows nothing
            return
        yield _histogram(
            "mms_writer_batch_size",
            "Requests committed together in one LMDB write transaction.",
            [str(bound) for bound in stats["batch_size_bounds"]],
            stats["batch_size_buckets"],
            stats["batch_size_sum"],
        )
        yield _histogram(
            "mms_writer_commit_seconds",
            "Time to run and commit one batch (including the fsync), in seconds.",
            [micros_as_seconds_text(bound) for bound in stats["commit_micros_bounds"]],
            stats["commit_micros_buckets"],
            stats["commit_micros_sum"] / 1_000_000,
        )
        batches = CounterMetricFamily("mms_writer_batches", "Batches committed by the writer.")
        batches.add_metric([], stats["batches"])
        yield batches
        growths = CounterMetricFamily("mms_lmdb_map_growths", "Times the LMDB map was grown.")
        growths.add_metric([], stats["map_growths"])
        yield growths
        yield GaugeMetricFamily(
            "mms_lmdb_map_size_bytes", "Size of the LMDB memory map.", value=stats["map_size_bytes"]
        )
        yield GaugeMetricFamily(
            "mms_lmdb_map_used_bytes",
            "Bytes of the LMDB map in use (pages up to the last used one).",
            value=stats["map_used_bytes"],
        )
