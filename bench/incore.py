"""In-core settle: Python threads calling `Core.submit` directly (no gRPC), as many as the
concurrency, each sending quick checkouts (stored value, a random member of the data set by
phone) one after another for a fixed time, as the data set's admin: one Actor, made once
from the saved token (`Core.authenticate` is not timed here; the server runs it per call).

Per point: settles/s, latency p50/p99/p999 as each thread saw it, and what the writer
saw over the same time (`Core.stats`: mean batch size, commit time per batch from the
writer's histogram, which covers run + commit + fsync). Guards: every answer is OK; the
writer committed exactly as many requests as were answered; the checkouts' ledger
entries are one contiguous run of sequence numbers as long as the count of answers.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import common

from engine._core import Actor, Core, CoreError
from engine.proto import transaction_pb2

START_TIMEOUT_S = 60.0


class _Lane(threading.Thread):
    """One client thread: checkouts until the deadline."""

    def __init__(
        self, core: Core, actor: Actor, tag: str, members: int, start: threading.Barrier
    ) -> None:
        super().__init__(name=f"incore-{tag}", daemon=True)
        self.core, self.actor, self.tag, self.members = core, actor, tag, members
        self.start_barrier = start
        self.deadline = 0.0
        self.latencies_s: list[float] = []
        self.errors: dict[str, int] = {}
        self.first_answer = b""
        self.last_answer = b""

    def run(self) -> None:
        submit, method, actor = self.core.submit, common.CHECKOUT_METHOD, self.actor
        randrange, members = random.Random(self.tag).randrange, self.members
        amounts = common.CHECKOUT_AMOUNTS_FEN
        latencies, clock, tag = self.latencies_s, time.perf_counter, self.tag
        self.start_barrier.wait(timeout=START_TIMEOUT_S)
        count = 0
        while clock() < self.deadline:
            request = common.encode_checkout(
                f"{tag}-{count}", common.phone(randrange(members)), amounts[count % 4]
            )
            began = clock()
            try:
                answer, _ = submit(method, actor, request)
            except CoreError as error:
                self.errors[error.reason] = self.errors.get(error.reason, 0) + 1
                continue
            finally:
                count += 1
            latencies.append(clock() - began)
            if not self.first_answer:
                self.first_answer = answer
            self.last_answer = answer


def writer_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """The writer's work between two `Core.stats()`: batches, mean batch size, commit
    time per batch (mean, and p50/p99 as histogram bucket bounds)."""
    batches = after["batches"] - before["batches"]
    requests = after["requests"] - before["requests"]
    commit_us = after["commit_micros_sum"] - before["commit_micros_sum"]
    buckets = [
        a - b
        for a, b in zip(
            after["commit_micros_buckets"], before["commit_micros_buckets"], strict=True
        )
    ]
    bounds = after["commit_micros_bounds"]
    size_buckets = [
        a - b
        for a, b in zip(after["batch_size_buckets"], before["batch_size_buckets"], strict=True)
    ]
    return {
        "writer_requests": requests,
        "writer_batches": batches,
        "mean_batch_size": round(requests / max(batches, 1), 2),
        "batch_size_p99_le": common.histogram_quantile(
            after["batch_size_bounds"], size_buckets, 0.99
        ),
        "commit_mean_ms": round(commit_us / max(batches, 1) / 1e3, 3),
        "commit_p50_le_ms": common.histogram_quantile(bounds, buckets, 0.5) / 1e3,
        "commit_p99_le_ms": common.histogram_quantile(bounds, buckets, 0.99) / 1e3,
        "writer_busy_share": 0.0,  # filled in by the caller, which knows the wall time
        "writer_us_per_request": round(commit_us / max(requests, 1), 1),
    }


def run_point(
    core: Core, actor: Actor, members: int, concurrency: int, duration_s: float, tag: str
) -> dict[str, Any]:
    start = threading.Barrier(concurrency + 1)
    lanes = [
        _Lane(core, actor, f"{tag}-c{concurrency}-{i}", members, start) for i in range(concurrency)
    ]
    for lane in lanes:
        lane.start()
    before = core.stats()
    start.wait(timeout=START_TIMEOUT_S)
    began = time.perf_counter()
    for lane in lanes:
        lane.deadline = began + duration_s
    for lane in lanes:
        lane.join(timeout=duration_s + 120)
        assert not lane.is_alive(), "a client thread did not finish"
    elapsed_s = time.perf_counter() - began
    after = core.stats()
    latencies = [value for lane in lanes for value in lane.latencies_s]
    errors: dict[str, int] = {}
    for lane in lanes:
        for reason, count in lane.errors.items():
            errors[reason] = errors.get(reason, 0) + count
    ok = len(latencies)
    assert not errors, f"checkouts failed: {errors}"
    writer = writer_delta(before, after)
    writer["writer_busy_share"] = round(
        (after["commit_micros_sum"] - before["commit_micros_sum"]) / 1e6 / elapsed_s, 3
    )
    assert writer["writer_requests"] == ok, (writer, ok)
    _check_ledger_run(lanes, ok)
    return {
        "concurrency": concurrency,
        "ok": ok,
        "elapsed_s": round(elapsed_s, 3),
        "per_s": round(ok / elapsed_s, 1),
        **common.latency_summary_ms(latencies),
        **writer,
    }


def _check_ledger_run(lanes: Sequence[_Lane], ok: int) -> None:
    """The answers' ledger entries are one contiguous run of `ok` sequence numbers: each
    answer stands for exactly one committed checkout."""
    seqs = [
        transaction_pb2.CheckoutResponse.FromString(answer).ledger_seq
        for lane in lanes
        for answer in (lane.first_answer, lane.last_answer)
        if answer
    ]
    if ok:
        assert max(seqs) - min(seqs) + 1 == ok, (min(seqs), max(seqs), ok)


def sweep(
    data_dir: str, members: int, concurrencies: Sequence[int], duration_s: float, durable: bool
) -> list[dict[str, Any]]:
    mode = "durable" if durable else "no-sync (NOT durable)"
    core = Core(data_dir, durable=durable)
    points = []
    try:
        # The data set's admin, from the token saved when it was built.
        actor = common.admin_actor(core, common.read_token(common.token_path(data_dir)))
        for concurrency in concurrencies:
            tag = f"incore-{'d' if durable else 'n'}-{time.monotonic_ns()}"
            point = run_point(core, actor, members, concurrency, duration_s, tag)
            point["durable"] = durable
            points.append(point)
            print(
                f"in-core {mode:>21} c={concurrency:<4} {point['per_s']:>9,.0f} settles/s"
                f"  p50 {point['p50_ms']:.2f} ms  p99 {point['p99_ms']:.2f} ms"
                f"  batch {point['mean_batch_size']:.1f}  commit {point['commit_mean_ms']:.2f} ms",
                flush=True,
            )
    finally:
        core.close()
    return points
