"""Authentication on the way in (issue 6, docs/AUTH.md section 5).

Every RPC but health checks and reflection carries `authorization: Bearer mms_...`. The
interceptor hands the token to the core, which verifies it (SHA-256, a lookup, the staff
record) and checks the role against the method; the actor it returns is what the core
handler passes on with the request, so every check that depends on the request's data
(the store, the refund's checkout, the limits) is made again in the core. Refusals end
the call with UNAUTHENTICATED or PERMISSION_DENIED and an ErrorInfo reason, and count in
`mms_auth_denied_total`. The token, the approver's token and PINs are never logged.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter

from engine._core import Actor, Core, CoreError
from engine.errors import abort_with_core_error
from engine.metrics import WrappedHandlers

AUTHORIZATION_KEY = "authorization"
BEARER_PREFIX = "Bearer "
APPROVER_KEY = "mms-approver"
TERMINAL_KEY = "mms-terminal"
# Only a system operator's maintenance calls name a merchant; staff tokens carry theirs.
MERCHANT_KEY = "mms-merchant"
# Services anyone who reaches the port may call: load balancers and grpcurl need them.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
# The core's reason when it cannot take requests any more.
CORE_DOWN_REASON = "SHUTTING_DOWN"
# Statuses of a refusal (counted as denials, whether the interceptor or the core refused).
DENIAL_STATUSES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})

# The actor of the call being handled; set by the interceptor around the handler, on the
# worker thread that runs it.
CURRENT_ACTOR: contextvars.ContextVar[Actor | None] = contextvars.ContextVar(
    "mms_actor", default=None
)

TerminalOf = Callable[[grpc.ServicerContext], "str | None"]


def denial_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "mms_auth_denied_total",
        "Calls refused for want of a valid token or permission, by reason.",
        ["grpc_service", "grpc_method", "reason"],
        registry=registry,
    )


def bearer(value: str) -> str:
    """The token of an authorization header. A header of another form becomes a value the
    core refuses as malformed (the header itself is never logged)."""
    if not value:
        return ""
    return value[len(BEARER_PREFIX) :] if value.startswith(BEARER_PREFIX) else "?"


def current_actor() -> Actor:
    actor = CURRENT_ACTOR.get()
    assert actor is not None, "a core handler runs only behind the AuthInterceptor"
    return actor


class AuthInterceptor(grpc.ServerInterceptor):
    """Authenticates every call of the engine's services before its handler runs."""

    def __init__(
        self,
        core: Core,
        denied: Counter,
        on_core_down: Callable[[], None],
        terminal_of: TerminalOf | None = None,
    ):
        self.core = core
        self.denied = denied
        self.on_core_down = on_core_down
        self.terminal_of = terminal_of
        self._handlers = WrappedHandlers(self._wrap_handler)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        full_name = handler_call_details.method
        if full_name.lstrip("/").rpartition("/")[0] in OPEN_SERVICES:
            return handler
        return self._handlers.get(handler, full_name)

    def _wrap_handler(self, handler: Any, full_name: str) -> Any:
        # Every engine method is unary; a streaming one would need its own wrapping.
        assert handler.unary_unary is not None, f"{full_name} is not unary"
        service, _, method = full_name.lstrip("/").rpartition("/")
        return handler._replace(
            unary_unary=self._wrap(handler.unary_unary, full_name, service, method)
        )

    def _wrap(
        self, behavior: Callable[..., Any], full_name: str, service: str, method: str
    ) -> Callable[..., Any]:
        def authenticated(request: Any, context: grpc.ServicerContext) -> Any:
            metadata = dict(context.invocation_metadata())
            terminal = self.terminal_of(context) if self.terminal_of else None
            try:
                actor = self.core.authenticate(
                    bearer(str(metadata.get(AUTHORIZATION_KEY, ""))),
                    full_name,
                    approver_token=bearer(str(metadata.get(APPROVER_KEY, ""))),
                    terminal_id=terminal or str(metadata.get(TERMINAL_KEY, "")),
                    operator_merchant=str(metadata.get(MERCHANT_KEY, "")),
                )
            except CoreError as error:
                if error.status in DENIAL_STATUSES:
                    self.denied.labels(service, method, error.reason.lower()).inc()
                elif error.reason == CORE_DOWN_REASON:
                    self.on_core_down()
                abort_with_core_error(context, error)
                raise AssertionError("abort returns only by raising") from error
            token = CURRENT_ACTOR.set(actor)
            try:
                return behavior(request, context)
            finally:
                CURRENT_ACTOR.reset(token)

        return authenticated
