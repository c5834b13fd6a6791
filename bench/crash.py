"""Durable means durable: SIGKILL the real server in the middle of checkout load, start it
again, and check the books.

1. A small data set (`members` members with balances, and its admin's token), `mms
   serve` (durable) on it, and the ledger entry count of the folder before the load (the
   auditor, server stopped). Every call below carries that token.
2. Checkouts from `concurrency` clients (mpload, every request and answer kept); half way
   through the load the server gets SIGKILL. Acknowledged: the checkouts answered OK.
   Unacknowledged: those sent that got an error (the connection died under them).
3. The server is started again on the same folder. Every acknowledged checkout is there:
   its retry (same request id, same bytes) is answered as a replay (`mms-replayed: 1`)
   with exactly the bytes of the first answer. Every unacknowledged one is retried too: it
   is either replayed (it was committed whole before the kill) or settled now, once.
4. The server is stopped (SIGTERM) and the folder audited (`engine.audit`, the code of
   `mms db audit`): no problem (every balance equals its ledger, postings sum to zero,
   ...), and the ledger grew by exactly one entry per checkout, acknowledged or not: no
   checkout is half there or there twice.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import common
import dataset
import grpc
import mpload

from engine import audit

KILL_AT_SHARE = 0.5
RETRY_TIMEOUT_S = 30.0


def _ledger_entries(data_dir: str) -> int:
    report = audit.audit(data_dir)
    assert report.clean, report.problems[:5]
    return report.counts["ledger_entries"]


def run(scratch: str, members: int, concurrency: int, duration_s: float) -> dict[str, Any]:
    data_dir = os.path.join(scratch, "crash-data")
    dataset.build(__import__("pathlib").Path(data_dir), members)
    token = common.read_token(common.token_path(data_dir))
    entries_before = _ledger_entries(data_dir)
    server = common.start_server(common.mms_serve_command(data_dir))
    killed_at: list[float] = []

    def kill_half_way(elapsed_s: float) -> None:
        if not killed_at and elapsed_s >= duration_s * KILL_AT_SHARE:
            server.process.send_signal(signal.SIGKILL)
            killed_at.append(elapsed_s)

    try:
        summary, results = mpload.run(
            server.address, "checkout", concurrency, duration_s, members,
            token=token, keep_answers=True, during=kill_half_way,
        )  # fmt: skip
    finally:
        code = server.stop(signal.SIGKILL)
    assert killed_at and code == -signal.SIGKILL, (killed_at, code)
    acknowledged = {k: v for result in results for k, v in result.acknowledged.items()}
    unacknowledged = [item for result in results for item in result.unacknowledged]
    assert acknowledged, "nothing was acknowledged before the kill"
    began = time.perf_counter()
    server = common.start_server(common.mms_serve_command(data_dir))
    restart_s = time.perf_counter() - began
    try:
        replayed_unacknowledged = _check_retries(
            server.address, token, acknowledged, unacknowledged
        )
    finally:
        assert server.stop(signal.SIGTERM) == 0
    entries_after = _ledger_entries(data_dir)
    settled = len(acknowledged) + len(unacknowledged)
    assert entries_after - entries_before == settled, (entries_before, entries_after, settled)
    outcome = {
        "members": members,
        "concurrency": concurrency,
        "killed_after_s": round(killed_at[0], 2),
        "acknowledged": len(acknowledged),
        "unacknowledged": len(unacknowledged),
        "unacknowledged_found_committed": replayed_unacknowledged,
        "restart_s": round(restart_s, 2),
        "ledger_entries_added": entries_after - entries_before,
        "audit_clean": True,
        "passed": True,
    }
    print(
        f"crash: SIGKILL after {outcome['killed_after_s']} s under load; {len(acknowledged)}"
        f" acknowledged checkouts all there (replayed byte for byte), {len(unacknowledged)}"
        f" unacknowledged ({replayed_unacknowledged} had been committed whole, the rest"
        f" settled once on retry); audit clean; ledger +{outcome['ledger_entries_added']}",
        flush=True,
    )
    return outcome


def _check_retries(
    address: str,
    token: str,
    acknowledged: dict[str, tuple[bytes, bytes]],
    unacknowledged: list[tuple[str, bytes]],
) -> int:
    metadata = common.call_metadata(token)
    with grpc.insecure_channel(address) as channel:
        checkout = channel.unary_unary(common.CHECKOUT_METHOD)
        for request_id, (request, answer) in acknowledged.items():
            again, call = checkout.with_call(request, timeout=RETRY_TIMEOUT_S, metadata=metadata)
            assert ("mms-replayed", "1") in call.trailing_metadata(), request_id
            assert again == answer, request_id
        replayed = 0
        for _, request in unacknowledged:
            _, call = checkout.with_call(request, timeout=RETRY_TIMEOUT_S, metadata=metadata)
            replayed += ("mms-replayed", "1") in call.trailing_metadata()
    return replayed
