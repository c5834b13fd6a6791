"""Shared set-up of the in-process benchmarks: a core (or the SQLite peer) in a tmp dir,
with members recharged so that no checkout in the whole run fails. The core is driven by
the merchant's head office admin, bootstrapped on it (`EngineBench.actor`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import peer_sqlite

from engine._core import Actor, Core
from engine.proto import common_pb2, config_pb2, member_pb2, transaction_pb2

MERCHANT = "bench"
WHOAMI_METHOD = "/mms.v1.AuthService/WhoAmI"
STORE_CODE = "S001"
MEMBERS = 1000
# Client threads of a burst: a busy shop floor's tills against one node.
THREADS = 32
# Checkouts per burst, spread over THREADS threads (THREADS divides it).
BURST_CHECKOUTS = 1024
CHECKOUT_AMOUNT_FEN = 100
# Enough for every checkout of the run: no checkout may fail for want of balance.
RECHARGE_FEN = 1_000_000
# A bound on any one burst, so that a hung run fails instead of waiting forever.
BURST_TIMEOUT_S = 120.0

CONFIG_METHOD = "/mms.v1.ConfigService/ApplyConfig"
REGISTER_METHOD = "/mms.v1.MemberService/RegisterMember"
RECHARGE_METHOD = "/mms.v1.TransactionService/Recharge"
CHECKOUT_METHOD = "/mms.v1.TransactionService/Checkout"
GET_MEMBER_METHOD = "/mms.v1.MemberService/GetMember"

BENCH_CONFIG = config_pb2.MerchantConfig(
    name="bench",
    stores=[config_pb2.Store(code=STORE_CODE, name="bench store")],
    # No discount, 1 point per yuan: the same postings as the SQLite peer.
    levels=[config_pb2.Level(code="regular", name="regular", milli_points_per_yuan=1000)],
)

assert BURST_CHECKOUTS % THREADS == 0
assert BURST_CHECKOUTS * 64 * CHECKOUT_AMOUNT_FEN <= MEMBERS * RECHARGE_FEN


def phone(index: int) -> str:
    return f"138{index:08d}"


class RequestIds:
    """Request ids unique within one data dir."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self.counter)}"


def checkout_bytes(request_id: str, member_index: int) -> bytes:
    request = transaction_pb2.CheckoutRequest(
        request_id=request_id,
        member=common_pb2.MemberRef(phone=phone(member_index)),
        list_amount_fen=CHECKOUT_AMOUNT_FEN,
        tenders=[common_pb2.Tender(method=common_pb2.STORED_VALUE, take_rest=True)],
        store_code=STORE_CODE,
    )
    return request.SerializeToString()


def run_on_threads(
    pool: ThreadPoolExecutor, work: Callable[[Any], int], shares: Sequence[Any]
) -> int:
    """Runs work(share) for every share on the pool at once; returns the sum of results."""
    futures = [pool.submit(work, share) for share in shares]
    return sum(future.result(timeout=BURST_TIMEOUT_S) for future in futures)


def split(items: Sequence[Any], parts: int) -> list[Sequence[Any]]:
    return [items[index::parts] for index in range(parts)]


class EngineBench:
    """A core on a tmp dir with MEMBERS members, each recharged RECHARGE_FEN."""

    def __init__(self, path: Path, pool: ThreadPoolExecutor, **options: Any) -> None:
        self.core = Core(str(path), **options)
        token, _ = self.core.bootstrap(MERCHANT, "admin", "Bench admin")
        # Authenticated once: an actor may act for every method its role allows.
        self.actor: Actor = self.core.authenticate(token, WHOAMI_METHOD)
        self.ids = RequestIds("bench")
        self.checkouts_submitted = 0
        self.core.submit(
            CONFIG_METHOD,
            self.actor,
            config_pb2.ApplyConfigRequest(
                request_id=self.ids.next(), config=BENCH_CONFIG
            ).SerializeToString(),
        )
        registered = run_on_threads(pool, self._register, split(range(MEMBERS), THREADS))
        assert registered == MEMBERS
        # Writer statistics are reported for the benchmark, not the set-up.
        self.stats_after_setup = self.core.stats()

    def _register(self, indexes: Sequence[int]) -> int:
        for index in indexes:
            register = member_pb2.RegisterMemberRequest(
                request_id=f"register-{index}", phone=phone(index), name="member"
            )
            self.core.submit(REGISTER_METHOD, self.actor, register.SerializeToString())
            recharge = transaction_pb2.RechargeRequest(
                request_id=f"recharge-{index}",
                member=common_pb2.MemberRef(phone=phone(index)),
                amount_fen=RECHARGE_FEN,
                method=common_pb2.CASH,
            )
            self.core.submit(RECHARGE_METHOD, self.actor, recharge.SerializeToString())
        return len(indexes)

    def burst_requests(self) -> list[Sequence[bytes]]:
        """BURST_CHECKOUTS serialized checkouts over every member, one share per thread."""
        start = self.checkouts_submitted
        requests = [
            checkout_bytes(self.ids.next(), (start + offset) % MEMBERS)
            for offset in range(BURST_CHECKOUTS)
        ]
        self.checkouts_submitted += BURST_CHECKOUTS
        return split(requests, THREADS)

    def submit_all(self, requests: Sequence[bytes]) -> int:
        """Submits one thread's share in turn; returns how many were answered."""
        submit, actor = self.core.submit, self.actor
        answered = 0
        for request in requests:
            submit(CHECKOUT_METHOD, actor, request)
            answered += 1
        return answered

    def principal_total_fen(self) -> int:
        total = 0
        for index in range(MEMBERS):
            request = member_pb2.GetMemberRequest(member=common_pb2.MemberRef(phone=phone(index)))
            answer = self.core.query(GET_MEMBER_METHOD, self.actor, request.SerializeToString())
            total += member_pb2.GetMemberResponse.FromString(answer).balances.principal_fen
        return total

    def check_books(self) -> dict[str, float]:
        """Asserts every submitted checkout moved money, and returns writer stats."""
        expected_fen = MEMBERS * RECHARGE_FEN - self.checkouts_submitted * CHECKOUT_AMOUNT_FEN
        assert self.principal_total_fen() == expected_fen
        stats, setup = self.core.stats(), self.stats_after_setup
        batches = stats["batches"] - setup["batches"]
        requests = stats["requests"] - setup["requests"]
        commit_micros = stats["commit_micros_sum"] - setup["commit_micros_sum"]
        assert requests == self.checkouts_submitted
        return {
            "writer_batches": batches,
            "writer_requests": requests,
            "mean_batch_size": round(requests / max(batches, 1), 2),
            "mean_commit_ms": round(commit_micros / max(batches, 1) / 1000, 3),
            "writer_us_per_checkout": round(commit_micros / max(requests, 1), 1),
        }

    def close(self) -> None:
        self.core.close()


class SqliteBench:
    """The SQLite peer on a tmp file with the same members, one connection per thread."""

    def __init__(self, path: Path, serialize_writers: bool = False) -> None:
        self.path = path
        self.write_lock = threading.Lock() if serialize_writers else None
        peer_sqlite.create(path, ((phone(index), RECHARGE_FEN) for index in range(MEMBERS)))
        self.ids = RequestIds("bench")
        self.checkouts_submitted = 0
        self.peers: dict[int, peer_sqlite.SqlitePeer] = {}

    def peer(self) -> peer_sqlite.SqlitePeer:
        """The calling thread's own connection, opened on first use."""
        thread_id = threading.get_ident()
        if thread_id not in self.peers:
            self.peers[thread_id] = peer_sqlite.SqlitePeer(self.path, self.write_lock)
        return self.peers[thread_id]

    def burst_requests(self) -> list[Sequence[tuple[str, str]]]:
        start = self.checkouts_submitted
        requests = [
            (self.ids.next(), phone((start + offset) % MEMBERS))
            for offset in range(BURST_CHECKOUTS)
        ]
        self.checkouts_submitted += BURST_CHECKOUTS
        return split(requests, THREADS)

    def check_books(self) -> dict[str, float]:
        counts = peer_sqlite.verify(self.path)
        assert counts["checkouts"] == self.checkouts_submitted
        return {"busy_retries": sum(peer.busy_retries for peer in self.peers.values())}

    def checkout_all(self, requests: Sequence[tuple[str, str]]) -> int:
        """Runs one thread's share in turn; returns how many were answered."""
        peer = self.peer()
        answered = 0
        for request_id, member_phone in requests:
            peer.checkout(request_id, member_phone, CHECKOUT_AMOUNT_FEN)
            answered += 1
        return answered

    def close(self) -> None:
        # Called once the pool is idle: no thread uses a connection any more.
        for peer in self.peers.values():
            peer.close()
        self.peers.clear()
