"""Load generator: checkouts over gRPC against a real server, the way tills would send them.

    .venv/bin/python bench/loadgen.py --spawn
    .venv/bin/python bench/loadgen.py --server 127.0.0.1:50051 --metrics-url http://127.0.0.1:9464/metrics

Every call carries a staff token (`authorization: Bearer mms_...`, docs/AUTH.md): the
merchant is the token's. With --spawn it is a fresh merchant `load-<run id>`, whose head
office admin is bootstrapped on the temp data folder while the server runs (`mms auth
bootstrap --quiet`: LMDB allows a second process). With --server it is the token in
$MMS_TOKEN: a head office admin of a merchant kept for load tests (`mms auth bootstrap
--merchant load --quiet` on the server machine), since the run applies its own config to
that merchant. The run applies a one-store, one-level config, registers `--members`
members (a member a run before registered already is kept) and recharges each of them
enough for every checkout of the run (both in parallel, from `--concurrency` threads),
then runs checkouts (stored value, member named by phone) from `--concurrency` threads
until `--requests` were sent or `--duration-s` passed. Every request id is unique to the
run, so it can run again and again against the same server.

It prints requests by status, throughput, latency percentiles, and, when /metrics is
reachable, the server's writer statistics over the checkout phase (mean batch size, mean
commit time) and the server's own count of successful checkouts as a cross-check.

With --spawn it starts `python -m engine serve` on a temp data dir and a free loopback
port (`--no-sync` passes the benchmarks-only no-fsync mode on), and stops it at the end.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from engine.proto import (  # noqa: E402
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    config_pb2,
    member_pb2,
    transaction_pb2,
)

AUTHORIZATION_KEY = "authorization"
TOKEN_ENVIRONMENT_VARIABLE = "MMS_TOKEN"
STORE_CODE = "S001"
CHECKOUT_AMOUNT_FEN = 100
CALL_TIMEOUT_S = 30.0
SPAWN_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
METRICS_TIMEOUT_S = 5.0
# Bounds on what one run may ask for.
MEMBERS_MAX = 1_000_000
CONCURRENCY_MAX = 1024
REQUESTS_MAX = 10_000_000
DURATION_S_MAX = 3600.0
# Client threads share a few TCP connections rather than one each.
CHANNELS_MAX = 4
# A member is a mainland mobile number: 138 + 8 digits.
PHONE_PREFIX = "138"

CONFIG_METHOD = "/mms.v1.ConfigService/ApplyConfig"
REGISTER_METHOD = "/mms.v1.MemberService/RegisterMember"
RECHARGE_METHOD = "/mms.v1.TransactionService/Recharge"
CHECKOUT_METHOD = "/mms.v1.TransactionService/Checkout"

_GRPC_LINE = re.compile(r"serving gRPC on (\S+)")
_METRICS_LINE = re.compile(r"metrics on (\S+)")


def phone(index: int) -> str:
    return f"{PHONE_PREFIX}{index:08d}"


def load_config() -> config_pb2.MerchantConfig:
    return config_pb2.MerchantConfig(
        name="负载测试 Load test",
        stores=[config_pb2.Store(code=STORE_CODE, name="总店 Head Store")],
        levels=[config_pb2.Level(code="regular", name="普通 Regular", milli_points_per_yuan=1000)],
    )


# --- the server ---------------------------------------------------------------------------


@dataclass
class Spawned:
    address: str
    metrics_url: str
    process: subprocess.Popen[str]
    data_dir: str = ""
    output: list[str] = field(default_factory=list)


@contextmanager
def spawn_server(no_sync: bool) -> Iterator[Spawned]:
    """`python -m engine serve` on a temp data dir and free loopback ports."""
    scratch = tempfile.mkdtemp(prefix="mms-loadgen-")
    data_dir = os.path.join(scratch, "data")
    command = [
        sys.executable, "-m", "engine", "serve",
        "--data", data_dir,
        "--listen", "127.0.0.1:0",
        "--metrics-port", "0",
    ]  # fmt: skip
    if no_sync:
        command.append("--no-sync")
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        spawned = _wait_until_serving(process)
        spawned.data_dir = data_dir
        yield spawned
    finally:
        _stop(process)
        shutil.rmtree(scratch, ignore_errors=True)


def bootstrap_admin(data_dir: str, merchant: str) -> str:
    """A head office admin token of `merchant`, made as an operator makes the first one:
    `mms auth bootstrap --quiet` on the data folder of the running server."""
    command = [
        sys.executable, "-m", "engine", "auth", "bootstrap",
        "--data", data_dir, "--merchant", merchant, "--quiet",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=SPAWN_TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"mms auth bootstrap failed: {done.stderr.strip()}")
    return done.stdout.strip()


def token_from_environment() -> str:
    token = os.environ.get(TOKEN_ENVIRONMENT_VARIABLE, "").strip()
    if not token:
        raise SystemExit(
            f"--server needs a staff token in ${TOKEN_ENVIRONMENT_VARIABLE}: a head office"
            " admin's, e.g. from `mms auth bootstrap --merchant load --quiet` on the server"
        )
    return token


def call_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),)


def who_am_i(channel: grpc.Channel, token: str) -> auth_pb2.WhoAmIResponse:
    """Whom the token stands for (a bad token fails here, before any set-up)."""
    return auth_pb2_grpc.AuthServiceStub(channel).WhoAmI(
        auth_pb2.WhoAmIRequest(), timeout=CALL_TIMEOUT_S, metadata=call_metadata(token)
    )


def _wait_until_serving(process: subprocess.Popen[str]) -> Spawned:
    assert process.stdout is not None
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    spawned = Spawned(address="", metrics_url="", process=process)
    while not (spawned.address and spawned.metrics_url):
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("server exited early:\n" + "".join(spawned.output))
        spawned.output.append(line)
        if match := _GRPC_LINE.search(line):
            spawned.address = match.group(1)
        if match := _METRICS_LINE.search(line):
            spawned.metrics_url = match.group(1)
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start:\n" + "".join(spawned.output))
    # Keep reading, so that a chatty server never blocks on a full pipe.
    drain = threading.Thread(
        target=lambda: spawned.output.extend(process.stdout),  # type: ignore[arg-type]
        name="server-output",
        daemon=True,
    )
    drain.start()
    return spawned


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)
    if process.returncode != 0:
        print(f"warning: server exited with code {process.returncode}", file=sys.stderr)


# --- metrics ------------------------------------------------------------------------------


def scrape(url: str) -> dict[str, float] | None:
    """The samples of /metrics by name and labels, or None when it cannot be reached."""
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_S) as response:
            text = response.read().decode()
    except OSError:
        return None
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    # Fields 14 and 15 of proc(5) (utime, stime) are the 12th and 13th after the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_report(
    server_pid: int | None,
    before: tuple[float | None, float],
    after: tuple[float | None, float],
    requests: int,
) -> list[str]:
    client_s = after[1] - before[1]
    line = f"cpu over the checkouts: client {client_s:.2f} s ({client_s / max(requests, 1) * 1e6:.0f} us/request)"
    if server_pid is not None and before[0] is not None and after[0] is not None:
        server_s = after[0] - before[0]
        line += f", server {server_s:.2f} s ({server_s / max(requests, 1) * 1e6:.0f} us/request)"
    return [line + f", machine has {os.cpu_count()} cores"]


def writer_report(before: dict[str, float] | None, after: dict[str, float] | None) -> list[str]:
    if before is None or after is None:
        return ["server metrics: not reachable (pass --metrics-url)"]

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    batches = delta("mms_writer_batch_size_count{}")
    requests = delta("mms_writer_batch_size_sum{}")
    commit_s = delta("mms_writer_commit_seconds_sum{}")
    handled_ok = delta(
        "grpc_server_handled_total{grpc_code=OK,grpc_method=Checkout,"
        "grpc_service=mms.v1.TransactionService,grpc_type=unary}"
    )
    lines = [f"server: checkouts answered OK (grpc_server_handled_total): {handled_ok:.0f}"]
    if batches:
        lines.append(
            f"server writer: {requests:.0f} requests in {batches:.0f} batches, mean batch size"
            f" {requests / batches:.2f}, mean commit {commit_s / batches * 1e3:.3f} ms"
            f" (run + commit + fsync), writer busy {commit_s:.2f} s"
        )
    return lines


# --- the load -------------------------------------------------------------------------------


class Caller:
    """Raw-bytes unary calls with the staff token; the channels are shared."""

    def __init__(self, channels: Sequence[grpc.Channel], token: str) -> None:
        self.metadata = call_metadata(token)
        self.methods: dict[str, list[Callable[..., bytes]]] = {
            name: [channel.unary_unary(name) for channel in channels]
            for name in (CONFIG_METHOD, REGISTER_METHOD, RECHARGE_METHOD, CHECKOUT_METHOD)
        }

    def stub(self, method: str, worker_index: int) -> Callable[[bytes], bytes]:
        """A per-thread callable on one of the shared channels."""
        callables = self.methods[method]
        call = callables[worker_index % len(callables)]
        metadata = self.metadata

        def invoke(request: bytes) -> bytes:
            return call(request, timeout=CALL_TIMEOUT_S, metadata=metadata)

        return invoke


@dataclass
class Outcome:
    latencies_s: list[float] = field(default_factory=list)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)


def set_up_members(
    caller: Caller, run_id: str, members: int, concurrency: int, recharge_fen: int
) -> None:
    apply = caller.stub(CONFIG_METHOD, 0)
    apply(
        config_pb2.ApplyConfigRequest(
            request_id=f"{run_id}-config", config=load_config()
        ).SerializeToString()
    )

    def register_share(worker_index: int) -> int:
        register = caller.stub(REGISTER_METHOD, worker_index)
        recharge = caller.stub(RECHARGE_METHOD, worker_index)
        for index in range(worker_index, members, concurrency):
            try:
                register(
                    member_pb2.RegisterMemberRequest(
                        request_id=f"{run_id}-register-{index}", phone=phone(index), name="会员"
                    ).SerializeToString()
                )
            except grpc.RpcError as error:
                # Registered by an earlier run on the same merchant (--server): keep it.
                if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
            recharge(
                transaction_pb2.RechargeRequest(
                    request_id=f"{run_id}-recharge-{index}",
                    member=common_pb2.MemberRef(phone=phone(index)),
                    amount_fen=recharge_fen,
                    method=common_pb2.CASH,
                ).SerializeToString()
            )
        return len(range(worker_index, members, concurrency))

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="setup") as pool:
        done = sum(pool.map(register_share, range(concurrency)))
    assert done == members


def run_checkouts(
    caller: Caller, run_id: str, members: int, concurrency: int, requests: int, duration_s: float
) -> tuple[Outcome, float]:
    tickets = itertools.count()  # next() is atomic under the GIL: each ticket is taken once
    deadline = time.monotonic() + duration_s
    start = threading.Barrier(concurrency + 1)

    def worker(worker_index: int) -> Outcome:
        checkout = caller.stub(CHECKOUT_METHOD, worker_index)
        outcome = Outcome()
        tender = common_pb2.Tender(method=common_pb2.STORED_VALUE, take_rest=True)
        start.wait(timeout=SPAWN_TIMEOUT_S)
        for _ in range(requests):  # bounded: at most every ticket
            ticket = next(tickets)
            if ticket >= requests or time.monotonic() >= deadline:
                break
            request = transaction_pb2.CheckoutRequest(
                request_id=f"{run_id}-checkout-{ticket}",
                member=common_pb2.MemberRef(phone=phone(ticket % members)),
                list_amount_fen=CHECKOUT_AMOUNT_FEN,
                tenders=[tender],
                store_code=STORE_CODE,
            ).SerializeToString()
            began = time.perf_counter()
            try:
                checkout(request)
                status = "OK"
            except grpc.RpcError as error:
                status = error.code().name if error.code() else "UNKNOWN"
            outcome.latencies_s.append(time.perf_counter() - began)
            outcome.statuses[status] += 1
        return outcome

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="load") as pool:
        futures = [pool.submit(worker, index) for index in range(concurrency)]
        start.wait(timeout=SPAWN_TIMEOUT_S)
        began = time.perf_counter()
        outcomes = [future.result(timeout=duration_s + CALL_TIMEOUT_S * 2) for future in futures]
        elapsed_s = time.perf_counter() - began
    total = Outcome()
    for outcome in outcomes:
        total.latencies_s.extend(outcome.latencies_s)
        total.statuses.update(outcome.statuses)
    return total, elapsed_s


def percentile_ms(sorted_latencies_s: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_latencies_s:
        return 0.0
    rank = max(1, min(len(sorted_latencies_s), round(fraction * len(sorted_latencies_s) + 0.5)))
    return sorted_latencies_s[rank - 1] * 1e3


def report(outcome: Outcome, elapsed_s: float) -> list[str]:
    latencies = sorted(outcome.latencies_s)
    sent = len(latencies)
    ok = outcome.statuses.get("OK", 0)
    p50, p90, p99 = (percentile_ms(latencies, fraction) for fraction in (0.50, 0.90, 0.99))
    latency_ms_max = latencies[-1] * 1e3 if latencies else 0.0
    by_status = ", ".join(f"{name} {count}" for name, count in sorted(outcome.statuses.items()))
    return [
        f"requests: {sent} sent in {elapsed_s:.2f} s; ok {ok}, failed {sent - ok} ({by_status})",
        f"throughput: {ok / elapsed_s:.0f} ok checkouts/s ({sent / elapsed_s:.0f} requests/s)",
        f"latency ms: p50 {p50:.2f}  p90 {p90:.2f}  p99 {p99:.2f}  max {latency_ms_max:.2f}",
    ]


# --- main ---------------------------------------------------------------------------------


def _bounded_int(maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not 1 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{value} is out of range 1..{maximum}")
        return value

    return parse


def _duration(text: str) -> float:
    value = float(text)
    if not 0 < value <= DURATION_S_MAX:
        raise argparse.ArgumentTypeError(f"{value} is out of range (0, {DURATION_S_MAX}]")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--server", metavar="HOST:PORT", help="a running server")
    target.add_argument("--spawn", action="store_true", help="start a server on a temp dir")
    parser.add_argument(
        "--metrics-url",
        default="",
        help="the server's /metrics (with --spawn: found out; default http://HOST:9464/metrics)",
    )
    parser.add_argument("--members", type=_bounded_int(MEMBERS_MAX), default=1000)
    parser.add_argument("--concurrency", type=_bounded_int(CONCURRENCY_MAX), default=64)
    parser.add_argument("--requests", type=_bounded_int(REQUESTS_MAX), default=20_000)
    parser.add_argument("--duration-s", type=_duration, default=30.0)
    parser.add_argument(
        "--no-sync", action="store_true", help="with --spawn: serve without fsync (benchmarks only)"
    )
    args = parser.parse_args(argv)
    if args.no_sync and not args.spawn:
        parser.error("--no-sync applies to a server started with --spawn")
    return args


def cpu_now(server_pid: int | None) -> tuple[float | None, float]:
    own = os.times()
    return (process_cpu_s(server_pid) if server_pid else None, own.user + own.system)


def run(
    address: str,
    metrics_url: str,
    args: argparse.Namespace,
    token: str,
    server_pid: int | None = None,
    run_id: str = "",
) -> None:
    run_id = run_id or uuid.uuid4().hex[:12]
    checkouts_per_member = -(-args.requests // args.members)
    recharge_fen = max(checkouts_per_member * CHECKOUT_AMOUNT_FEN * 2, 10_000)
    channel_count = min(args.concurrency, CHANNELS_MAX)
    # Separate subchannel pools, so each channel is its own TCP connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.insecure_channel(address, options=options) for _ in range(channel_count)]
    try:
        for channel in channels:
            grpc.channel_ready_future(channel).result(timeout=SPAWN_TIMEOUT_S)
        me = who_am_i(channels[0], token)
        caller = Caller(channels, token)
        print(
            f"server {address}, merchant {me.merchant} (as {me.staff_code}), run {run_id}",
            flush=True,
        )
        began = time.perf_counter()
        set_up_members(caller, run_id, args.members, args.concurrency, recharge_fen)
        print(
            f"set-up: {args.members} members registered and recharged in"
            f" {time.perf_counter() - began:.1f} s",
            flush=True,
        )
        before = scrape(metrics_url)
        cpu_before = cpu_now(server_pid)
        outcome, elapsed_s = run_checkouts(
            caller, run_id, args.members, args.concurrency, args.requests, args.duration_s
        )
        cpu_after = cpu_now(server_pid)
        after = scrape(metrics_url)
    finally:
        for channel in channels:
            channel.close()
    print(
        f"checkouts: concurrency {args.concurrency} threads on {channel_count} channels,"
        f" limit {args.requests} requests or {args.duration_s:g} s"
    )
    sent = len(outcome.latencies_s)
    lines = report(outcome, elapsed_s) + writer_report(before, after)
    for line in lines + cpu_report(server_pid, cpu_before, cpu_after, sent):
        print(line)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.spawn:
        with spawn_server(args.no_sync) as spawned:
            mode = "no-sync (benchmarks only)" if args.no_sync else "durable"
            print(f"spawned server pid {spawned.process.pid} ({mode})", flush=True)
            run_id = uuid.uuid4().hex[:12]
            token = bootstrap_admin(spawned.data_dir, f"load-{run_id}")
            metrics_url = args.metrics_url or spawned.metrics_url
            run(spawned.address, metrics_url, args, token, spawned.process.pid, run_id)
        return 0
    token = token_from_environment()
    host = args.server.rpartition(":")[0] or "127.0.0.1"
    run(args.server, args.metrics_url or f"http://{host}:9464/metrics", args, token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
