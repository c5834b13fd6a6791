"""In-process benchmarks of the core (no gRPC) and of its SQLite peer.

Run with `.venv/bin/python -m pytest bench -q --benchmark-only` (pyproject's testpaths
names only tests/, so `bench` is passed on the command line). pytest puts bench/ on
sys.path, which is how `support` and `peer_sqlite` are imported.

Each benchmark builds its own data in a tmp dir (MEMBERS members, each recharged enough
that no checkout of the run fails), times what its name says, and asserts every checkout
it timed succeeded, per round and again against the books at the end: a broken run
fails instead of looking fast. Requests are serialized before the clock starts, so the
figures are the engine's, not Python protobuf's.

- test_single_checkout_durable: one checkout at a time; one commit (fsync) per request.
- test_burst_group_commit: BURST_CHECKOUTS checkouts from THREADS threads against the
  durable core; the writer commits whatever is queued together (group commit).
- test_burst_one_commit_per_request: the same burst, core opened with
  batch_requests_max=1 (one commit and fsync per request, no group commit).
- test_burst_sqlite_peer: the same burst on the SQLite peer (bench/peer_sqlite.py).
- test_burst_sqlite_peer_serialized: the same, writers queued on a lock in the process
  rather than in SQLite's busy handler (the best one process can do with SQLite).
- test_single_checkout_sqlite_peer: one SQLite checkout at a time, the peer of the first.
- test_burst_group_commit_no_sync: the first burst without fsync: the CPU ceiling that
  durability is paid against (benchmarks-only mode).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support import (
    BURST_CHECKOUTS,
    CHECKOUT_AMOUNT_FEN,
    CHECKOUT_METHOD,
    MEMBERS,
    THREADS,
    EngineBench,
    SqliteBench,
    checkout_bytes,
    phone,
    run_on_threads,
)

SINGLE_ROUNDS = 300
BURST_ROUNDS_FAST = 20
BURST_ROUNDS_SLOW = 6
WARMUP_ROUNDS = 1


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    """THREADS client threads, shared by the benchmarks of this module."""
    with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="bench-client") as executor:
        yield executor


def _record(benchmark: Any, checkouts_per_round: int, books: dict[str, float]) -> None:
    benchmark.extra_info.update(books)
    benchmark.extra_info["checkouts_per_round"] = checkouts_per_round
    benchmark.extra_info["threads"] = THREADS if checkouts_per_round > 1 else 1


@pytest.fixture
def engine(tmp_path: Path, pool: ThreadPoolExecutor, request: pytest.FixtureRequest):
    options = getattr(request, "param", {})
    bench = EngineBench(tmp_path / "lmdb", pool, **options)
    try:
        yield bench
    finally:
        bench.close()


@pytest.fixture
def sqlite_peer(tmp_path: Path, request: pytest.FixtureRequest):
    bench = SqliteBench(tmp_path / "peer.sqlite3", **getattr(request, "param", {}))
    try:
        yield bench
    finally:
        bench.close()


def test_single_checkout_durable(benchmark: Any, engine: EngineBench) -> None:
    def setup() -> tuple[tuple[bytes], dict[str, Any]]:
        member_index = engine.checkouts_submitted % MEMBERS
        engine.checkouts_submitted += 1
        return (checkout_bytes(engine.ids.next(), member_index),), {}

    def one_checkout(request: bytes) -> None:
        answer, replayed = engine.core.submit(CHECKOUT_METHOD, engine.actor, request)
        assert answer and not replayed

    benchmark.group = "single checkout"
    benchmark.pedantic(
        one_checkout, setup=setup, rounds=SINGLE_ROUNDS, warmup_rounds=WARMUP_ROUNDS * 10
    )
    _record(benchmark, 1, engine.check_books())


def _engine_burst(benchmark: Any, engine: EngineBench, pool: ThreadPoolExecutor, rounds: int):
    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        return (engine.burst_requests(),), {}

    def burst(shares: Any) -> None:
        answered = run_on_threads(pool, engine.submit_all, shares)
        assert answered == BURST_CHECKOUTS

    benchmark.group = f"burst of {BURST_CHECKOUTS} checkouts from {THREADS} threads"
    benchmark.pedantic(burst, setup=setup, rounds=rounds, warmup_rounds=WARMUP_ROUNDS)
    _record(benchmark, BURST_CHECKOUTS, engine.check_books())


def test_burst_group_commit(benchmark: Any, engine: EngineBench, pool: ThreadPoolExecutor) -> None:
    _engine_burst(benchmark, engine, pool, BURST_ROUNDS_FAST)


@pytest.mark.parametrize("engine", [{"batch_requests_max": 1}], indirect=True, ids=["batch1"])
def test_burst_one_commit_per_request(
    benchmark: Any, engine: EngineBench, pool: ThreadPoolExecutor
) -> None:
    _engine_burst(benchmark, engine, pool, BURST_ROUNDS_SLOW)
    assert benchmark.extra_info["mean_batch_size"] == 1


@pytest.mark.parametrize("engine", [{"durable": False}], indirect=True, ids=["nosync"])
def test_burst_group_commit_no_sync(
    benchmark: Any, engine: EngineBench, pool: ThreadPoolExecutor
) -> None:
    _engine_burst(benchmark, engine, pool, BURST_ROUNDS_FAST)


def test_burst_sqlite_peer(
    benchmark: Any, sqlite_peer: SqliteBench, pool: ThreadPoolExecutor
) -> None:
    _sqlite_burst(benchmark, sqlite_peer, pool)


@pytest.mark.parametrize(
    "sqlite_peer", [{"serialize_writers": True}], indirect=True, ids=["serialized"]
)
def test_burst_sqlite_peer_serialized(
    benchmark: Any, sqlite_peer: SqliteBench, pool: ThreadPoolExecutor
) -> None:
    _sqlite_burst(benchmark, sqlite_peer, pool)


def _sqlite_burst(benchmark: Any, sqlite_peer: SqliteBench, pool: ThreadPoolExecutor) -> None:
    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        return (sqlite_peer.burst_requests(),), {}

    def burst(shares: Any) -> None:
        answered = run_on_threads(pool, sqlite_peer.checkout_all, shares)
        assert answered == BURST_CHECKOUTS

    benchmark.group = f"burst of {BURST_CHECKOUTS} checkouts from {THREADS} threads"
    benchmark.pedantic(burst, setup=setup, rounds=BURST_ROUNDS_SLOW, warmup_rounds=WARMUP_ROUNDS)
    _record(benchmark, BURST_CHECKOUTS, sqlite_peer.check_books())


def test_single_checkout_sqlite_peer(benchmark: Any, sqlite_peer: SqliteBench) -> None:
    def setup() -> tuple[tuple[str, str], dict[str, Any]]:
        member_index = sqlite_peer.checkouts_submitted % MEMBERS
        sqlite_peer.checkouts_submitted += 1
        return (sqlite_peer.ids.next(), phone(member_index)), {}

    peer = sqlite_peer.peer()

    def one_checkout(request_id: str, member_phone: str) -> None:
        assert peer.checkout(request_id, member_phone, CHECKOUT_AMOUNT_FEN)

    benchmark.group = "single checkout"
    benchmark.pedantic(
        one_checkout, setup=setup, rounds=SINGLE_ROUNDS, warmup_rounds=WARMUP_ROUNDS * 10
    )
    _record(benchmark, 1, sqlite_peer.check_books())
