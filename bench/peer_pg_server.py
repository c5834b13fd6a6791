"""The Python + PostgreSQL peer over gRPC: what a Python team would otherwise build.

The same stack as `mms serve` (grpcio, a thread pool of the same size, the same options
and metrics interceptor), serving `/mms.v1.TransactionService/Checkout` with the same
request and response messages. A handler parses the CheckoutRequest (Python protobuf),
calls the PL/pgSQL `settle` function of `peer_pg.py` through psycopg 3 (one connection
per worker thread, autocommit: the function call is its own transaction; psycopg
prepares the statement after a few calls), and builds the CheckoutResponse from the
function's JSON answer. A refusal becomes FAILED_PRECONDITION / NOT_FOUND.

    .venv/bin/python bench/peer_pg_server.py --dsn "host=127.0.0.1 port=5432 dbname=bench user=postgres"
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures

import common  # noqa: F401  (puts the repository on sys.path)
import grpc
import psycopg
from prometheus_client import CollectorRegistry

from engine.metrics import GrpcMetrics, MetricsInterceptor
from engine.proto import common_pb2, transaction_pb2
from engine.server import CONCURRENT_RPCS_MAX, MESSAGE_BYTES_MAX, WORKERS_DEFAULT

SETTLE_SQL = "SELECT settle(%s, %s, %s, %s)"
_REFUSALS = {
    "INSUFFICIENT_BALANCE": grpc.StatusCode.FAILED_PRECONDITION,
    "MEMBER_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
}


class Settler:
    """One psycopg connection per worker thread, opened on first use."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.local = threading.local()

    def connection(self) -> psycopg.Connection:
        connection = getattr(self.local, "connection", None)
        if connection is None or connection.closed:
            connection = psycopg.connect(self.dsn, autocommit=True)
            self.local.connection = connection
        return connection

    def checkout(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        checkout = transaction_pb2.CheckoutRequest.FromString(request)
        try:
            row = (
                self.connection()
                .execute(
                    SETTLE_SQL,
                    (
                        checkout.request_id,
                        checkout.member.phone,
                        checkout.list_amount_fen,
                        checkout.store_code or common.STORE_CODE,
                    ),
                )
                .fetchone()
            )
        except psycopg.errors.RaiseException as error:
            reason = str(error.diag.message_primary)
            context.abort(_REFUSALS.get(reason, grpc.StatusCode.INTERNAL), reason)
            raise AssertionError("abort returns only by raising") from error
        answer = row[0]
        due = answer["amount_due_fen"]
        response = transaction_pb2.CheckoutResponse(
            member_id=answer["member_id"],
            list_amount_fen=answer["list_amount_fen"],
            discount_bp=answer["discount_bp"],
            discount_fen=answer["list_amount_fen"] - due,
            amount_due_fen=due,
            payments=[
                common_pb2.Payment(
                    method=common_pb2.STORED_VALUE,
                    amount_fen=due,
                    principal_fen=answer["from_principal"],
                    bonus_fen=answer["from_bonus"],
                )
            ],
            points_earned=answer["points_earned"],
            balances=common_pb2.Balances(
                principal_fen=answer["principal_fen"],
                bonus_fen=answer["bonus_fen"],
                points=answer["points"],
            ),
            level_before=answer["level_before"],
            level_after=answer["level_after"],
            level_upgraded=answer["level_before"] != answer["level_after"],
            ledger_seq=answer["ledger_seq"],
            store_code=answer["store_code"],
        )
        return response.SerializeToString()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    settler = Settler(args.dsn)
    settler.connection().close()  # fail now if the database cannot be reached
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=WORKERS_DEFAULT, thread_name_prefix="peer-grpc"),
        interceptors=[MetricsInterceptor(GrpcMetrics(CollectorRegistry()))],
        options=[
            ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
            ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=CONCURRENT_RPCS_MAX,
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "mms.v1.TransactionService",
                {"Checkout": grpc.unary_unary_rpc_method_handler(settler.checkout)},
            )
        ]
    )
    port = server.add_insecure_port(args.listen)
    server.start()
    host = args.listen.rpartition(":")[0]
    print(f"python+postgres peer: serving gRPC on {host}:{port}", flush=True)
    stop.wait()
    server.stop(5).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
