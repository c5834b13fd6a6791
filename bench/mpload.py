"""A multi-process gRPC load generator (the suite's client for every end-to-end case).

Why not h2load: every mutating request needs its own request_id (a repeated id is a
replay, answered from its record without settling again), and h2load sends the same body
every time. Why not the threaded sync grpcio client of `loadgen.py`: it spends ~320 us of
CPU per call (README), as much as half the server's, on a 2-core machine shared with it.
So: `processes` worker processes (2 by default, one per core; at most `concurrency`),
each an asyncio event loop on one grpc.aio channel with its share of the concurrency as
tasks, each task sending one request after another, request bytes hand-encoded
(`common.encode_*`). The client's CPU per request is measured and reported with every
result, and the empty-method case shows the ceiling this client and the server's front
reach together.

Workloads: `lookup` (GetMember by phone), `checkout` (quick checkout, stored value),
`recharge`, `mix` (50 % lookup, 40 % checkout, 10 % recharge: a till looks the member up,
then settles; now and then a top-up), `hot` (checkouts on the HOT_MEMBERS first members
only), `empty` (the bench server's empty method). Members are drawn at random. Every
call carries the staff token given to `run` (`common.call_metadata`), passed to the worker
processes in their Job like every other setting.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import common

CALL_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 60.0
START_DELAY_S = 0.3
# After a failed call a task waits this long, so a dead server is not hammered.
ERROR_BACKOFF_S = 0.005
PROCESSES_DEFAULT = 2
# The share of each kind in the `mix` workload, in percent.
MIX_PERCENT = (("lookup", 50), ("checkout", 40), ("recharge", 10))
WORKLOADS = ("lookup", "checkout", "recharge", "mix", "hot", "empty")

_METHODS = {
    "lookup": common.GET_MEMBER_METHOD,
    "checkout": common.CHECKOUT_METHOD,
    "recharge": common.RECHARGE_METHOD,
    "hot": common.CHECKOUT_METHOD,
    "empty": common.EMPTY_METHOD,
}


@dataclass
class Job:
    address: str
    workload: str
    tasks: int
    members: int
    tag: str
    token: str  # the staff token every call carries
    keep_answers: bool = False  # checkout answers by request id (guards, crash case)


@dataclass
class WorkerResult:
    latencies: array = field(default_factory=lambda: array("d"))
    statuses: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)
    cpu_s: float = 0.0
    # With keep_answers: request id -> (request, answer) of every OK checkout, and
    # (request id, request) of every checkout that got no answer.
    acknowledged: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    unacknowledged: list[tuple[str, bytes]] = field(default_factory=list)


def _kinds(workload: str) -> list[str]:
    if workload == "mix":
        return [kind for kind, percent in MIX_PERCENT for _ in range(percent)]
    return [workload]


async def _task(channel: Any, job: Job, index: int, end_at: float, result: WorkerResult) -> None:
    import grpc

    calls = {kind: channel.unary_unary(method) for kind, method in _METHODS.items()}
    metadata = common.call_metadata(job.token)
    rng = random.Random(f"{job.tag}-{index}")
    kinds = _kinds(job.workload)
    members = common.HOT_MEMBERS if job.workload == "hot" else job.members
    amounts = common.CHECKOUT_AMOUNTS_FEN
    latencies, statuses, clock = result.latencies, result.statuses, time.monotonic
    count = 0
    while clock() < end_at:
        kind = kinds[rng.randrange(len(kinds))]
        member_phone = common.phone(rng.randrange(members))
        request_id = f"{job.tag}-{index}-{count}"
        count += 1
        if kind in ("checkout", "hot"):
            request = common.encode_checkout(request_id, member_phone, amounts[count % 4])
        elif kind == "recharge":
            request = common.encode_recharge(request_id, member_phone)
        elif kind == "lookup":
            request = common.encode_lookup(member_phone)
        else:
            request = b""
        began = clock()
        try:
            answer = await calls[kind](request, timeout=CALL_TIMEOUT_S, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            statuses[error.code().name] += 1
            if job.keep_answers:
                # The crash case: this task's request was in flight when the server died.
                if kind in ("checkout", "hot"):
                    result.unacknowledged.append((request_id, request))
                return
            await asyncio.sleep(ERROR_BACKOFF_S)
            continue
        latencies.append(clock() - began)
        statuses["OK"] += 1
        result.by_kind[kind] += 1
        if job.keep_answers and kind in ("checkout", "hot"):
            result.acknowledged[request_id] = (request, answer)


async def _worker_main(job: Job, connection: Any) -> None:
    import grpc

    result = WorkerResult()
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(job.address, options=options) as channel:
        await asyncio.wait_for(channel.channel_ready(), READY_TIMEOUT_S)
        connection.send("ready")
        start_at, end_at = connection.recv()
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        cpu_began = time.process_time()
        tasks = [_task(channel, job, index, end_at, result) for index in range(job.tasks)]
        await asyncio.gather(*tasks)
        result.cpu_s = time.process_time() - cpu_began
    connection.send(result)


def _worker(job: Job, connection: Any) -> None:
    asyncio.run(_worker_main(job, connection))


def run(
    address: str,
    workload: str,
    concurrency: int,
    duration_s: float,
    members: int,
    *,
    token: str,
    processes: int = PROCESSES_DEFAULT,
    keep_answers: bool = False,
    during: Any = None,
) -> tuple[dict[str, Any], list[WorkerResult]]:
    """Runs the workload for duration_s at `concurrency` requests in flight; returns the
    summary and the workers' raw results. Every call carries `token`. `during(elapsed_s)`,
    if given, is called about every 50 ms while the load runs (the crash case kills the
    server from it)."""
    assert workload in WORKLOADS, workload
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    tag = f"{workload}-c{concurrency}-{os.getpid()}-{time.monotonic_ns()}"
    workers = []
    for index, tasks in enumerate(shares):
        parent_end, child_end = context.Pipe()
        job = Job(address, workload, tasks, members, f"{tag}-p{index}", token, keep_answers)
        process = context.Process(target=_worker, args=(job, child_end), daemon=True)
        process.start()
        workers.append((process, parent_end))
    for _, pipe in workers:
        if not pipe.poll(READY_TIMEOUT_S):
            raise RuntimeError("a load worker did not connect")
        assert pipe.recv() == "ready"
    start_at = time.monotonic() + START_DELAY_S
    end_at = start_at + duration_s
    for _, pipe in workers:
        pipe.send((start_at, end_at))
    while during is not None and time.monotonic() < end_at:
        time.sleep(0.05)
        if time.monotonic() >= start_at:
            during(time.monotonic() - start_at)
    results = []
    for process, pipe in workers:
        if not pipe.poll(duration_s + CALL_TIMEOUT_S + READY_TIMEOUT_S):
            raise RuntimeError("a load worker did not report")
        results.append(pipe.recv())
        process.join(timeout=READY_TIMEOUT_S)
    return summarize(results, concurrency, duration_s, processes), results


def summarize(
    results: list[WorkerResult], concurrency: int, duration_s: float, processes: int
) -> dict[str, Any]:
    latencies = [value for result in results for value in result.latencies]
    statuses: Counter = Counter()
    by_kind: Counter = Counter()
    for result in results:
        statuses.update(result.statuses)
        by_kind.update(result.by_kind)
    ok = statuses.get("OK", 0)
    cpu_s = sum(result.cpu_s for result in results)
    return {
        "concurrency": concurrency,
        "ok": ok,
        "failed": sum(statuses.values()) - ok,
        "statuses": dict(statuses),
        "ok_by_kind": dict(by_kind),
        "elapsed_s": duration_s,
        "per_s": round(ok / duration_s, 1),
        **common.latency_summary_ms(latencies),
        "client_processes": processes,
        "client_cpu_us_per_request": round(cpu_s / max(ok, 1) * 1e6, 1),
    }
