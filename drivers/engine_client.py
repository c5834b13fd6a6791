"""The bridge as a gRPC client of the engine, like any POS: member lookup, item lookup by
barcode (the catalog), checkout, the merchant's config (store and level names for the
receipt)."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from drivers.config import EngineSettings
from engine.proto import (
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    config_pb2,
    config_pb2_grpc,
    member_pb2,
    member_pb2_grpc,
    transaction_pb2,
    transaction_pb2_grpc,
)
from engine.tls import ClientTls, open_channel

__all__ = ["UNCERTAIN_CODES", "EngineClient", "error_reason"]

MERCHANT_METADATA_KEY = "mms-merchant"
REPLAYED_METADATA = ("mms-replayed", "1")
MESSAGE_BYTES_MAX = 4 * 1024 * 1024
RECONNECT_BACKOFF_MS_MIN = 200
RECONNECT_BACKOFF_MS_MAX = 2000
# After these a checkout may or may not have been applied: send it again, same request_id.
UNCERTAIN_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def error_reason(error: grpc.RpcError) -> str:
    """The engine's machine-readable reason (google.rpc.ErrorInfo), or the status name."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        status = None
    if status is not None:
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return info.reason
    code = error.code() if hasattr(error, "code") else None
    return code.name if code is not None else "UNKNOWN"


class EngineClient:
    def __init__(
        self,
        settings: EngineSettings,
        token: str = "",
        tls: ClientTls | None = None,
        terminal_id: str = "",
    ) -> None:
        """`tls`: None for plaintext; reading its files may raise engine.tls.TlsError.
        `terminal_id` goes with every call (`mms-terminal`), so the engine's audit log says
        which counter made each change (with mutual TLS the certificate's CN wins)."""
        self.settings = settings
        options = [
            ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
            ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
            # An engine back after an outage is reached within seconds, not grpc's
            # default of up to two minutes: a customer is waiting at the counter.
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS_MIN),
            ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS_MIN),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS_MAX),
        ]
        self._channel = open_channel(settings.address, tls, options)
        self._members = member_pb2_grpc.MemberServiceStub(self._channel)
        self._transactions = transaction_pb2_grpc.TransactionServiceStub(self._channel)
        self._config = config_pb2_grpc.ConfigServiceStub(self._channel)
        self._catalog = catalog_pb2_grpc.CatalogServiceStub(self._channel)
        metadata: list[tuple[str, str]] = [(MERCHANT_METADATA_KEY, settings.merchant)]
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        if terminal_id:
            metadata.append(("mms-terminal", terminal_id))
        self._metadata = tuple(metadata)

    def get_member(self, ref: common_pb2.MemberRef) -> member_pb2.GetMemberResponse:
        request = member_pb2.GetMemberRequest(member=ref)
        return self._members.GetMember(
            request, timeout=self.settings.timeout_s, metadata=self._metadata
        )

    def get_item(self, barcode: str, store_code: str) -> catalog_pb2.GetItemResponse:
        """The catalog's item of a scanned barcode, with its stock at `store_code`."""
        request = catalog_pb2.GetItemRequest(barcode=barcode, store_code=store_code)
        return self._catalog.GetItem(
            request, timeout=self.settings.timeout_s, metadata=self._metadata
        )

    def checkout(
        self, request: transaction_pb2.CheckoutRequest
    ) -> tuple[transaction_pb2.CheckoutResponse, bool]:
        """The engine's answer, and whether it is a replay (the request_id had been
        settled before: this retry changed nothing)."""
        response, call = self._transactions.Checkout.with_call(
            request, timeout=self.settings.timeout_s, metadata=self._metadata
        )
        replayed = REPLAYED_METADATA in tuple(call.trailing_metadata() or ())
        return response, replayed

    def merchant_config(self) -> config_pb2.MerchantConfig:
        response = self._config.GetConfig(
            config_pb2.GetConfigRequest(), timeout=self.settings.timeout_s, metadata=self._metadata
        )
        return response.config

    def close(self) -> None:
        self._channel.close()
