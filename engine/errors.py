"""How the engine's refusals leave the server: the gRPC status of the CoreError, its
reason as a google.rpc.ErrorInfo, and the replay mark."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from engine._core import CoreError

ERROR_DOMAIN = "mms.v1"
# Trailing metadata on an answer (or error) that is the first answer to an earlier request
# with the same request_id, given again: the retry changed nothing.
REPLAYED_METADATA = ("mms-replayed", "1")

_STATUS_CODES = {code.name: code for code in grpc.StatusCode}


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def abort_with_core_error(context: grpc.ServicerContext, error: CoreError) -> None:
    """Ends the RPC with the error's status, its reason as a google.rpc.ErrorInfo, and the
    replay mark when it is the first answer to the same request_id given again."""
    code = _STATUS_CODES.get(error.status, grpc.StatusCode.INTERNAL)
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=error.message, details=[detail])
    )
    trailing = tuple(status.trailing_metadata)
    if getattr(error, "replayed", False):
        trailing += (REPLAYED_METADATA,)
    context.abort_with_status(_Status(status.code, status.details, trailing))
