"""What every part of the suite (`bench/suite.py`) shares: the machine, the merchant and
its admin's token, the hand-encoded hot requests, percentiles, and the server processes it
starts.

Requests on the timed paths are encoded by hand (`encode_checkout`, `encode_lookup`, ...)
rather than through Python protobuf, so that the client's cost is small next to what is
measured; `check_encoders` compares every encoder with protobuf's own encoding before a
run, so a hand-encoded request is byte for byte what protobuf would send.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
for _path in (REPO, BENCH):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from engine._core import Actor, Core  # noqa: E402
from engine.cli_auth import save_token  # noqa: E402
from engine.proto import common_pb2, config_pb2, member_pb2, transaction_pb2  # noqa: E402

MERCHANT = "bench1m"
# Every call acts as the merchant's head office admin (docs/AUTH.md): in-process through
# the Actor `Core.authenticate` makes, over gRPC with the token in `authorization`.
ADMIN_STAFF_CODE = "admin"
ADMIN_NAME = "Bench admin 性能测试"
# The admin's token, written next to data.mdb when the data set is built (mode 0600).
TOKEN_FILE_NAME = "bench-token"
AUTHORIZATION_KEY = "authorization"
STORE_CODE = "S001"
PHONE_FIRST = 13_000_000_000
# Balance given to every member at load (a recharge of this much earns the top bonus).
OPENING_RECHARGE_FEN = 50_000
# The quick checkouts' list amounts, cycled: ¥12.80, ¥35.00, ¥8.50, ¥66.00.
CHECKOUT_AMOUNTS_FEN = (1_280, 3_500, 850, 6_600)
RECHARGE_AMOUNT_FEN = 10_000
HOT_MEMBERS = 10
# The hot members get this much more, so that no hot checkout fails for want of balance.
HOT_RECHARGE_FEN = 100_000_000
# A loaded machine: the 1-minute load average above this when a run starts is reported.
QUIET_LOAD_AVERAGE = 0.5

CONFIG_METHOD = "/mms.v1.ConfigService/ApplyConfig"
IMPORT_METHOD = "/mms.v1.MemberService/ImportMembers"
GET_MEMBER_METHOD = "/mms.v1.MemberService/GetMember"
RECHARGE_METHOD = "/mms.v1.TransactionService/Recharge"
CHECKOUT_METHOD = "/mms.v1.TransactionService/Checkout"
# Allowed to every role: what an actor is authenticated against before it acts.
WHOAMI_METHOD = "/mms.v1.AuthService/WhoAmI"
EMPTY_METHOD = "/mms.bench.v1.Bench/Empty"

SERVER_START_TIMEOUT_S = 120.0
SERVER_STOP_TIMEOUT_S = 60.0
_GRPC_LINE = re.compile(r"serving gRPC on (\S+)")
_METRICS_LINE = re.compile(r"metrics on (\S+)")


def merchant_config() -> config_pb2.MerchantConfig:
    """Four levels (discount, points, upgrade by cumulative spend), recharge bonus rules and
    points redemption: a checkout exercises every one of them."""
    level = config_pb2.Level
    return config_pb2.MerchantConfig(
        name="性能测试 Bench",
        stores=[config_pb2.Store(code=STORE_CODE, name="总店 Head Store")],
        levels=[
            level(code="regular", name="普通", milli_points_per_yuan=1_000),
            level(
                code="silver",
                name="银卡",
                discount_bp=500,
                milli_points_per_yuan=1_200,
                upgrade_cumulative_spend_fen=20_000,
            ),
            level(
                code="gold",
                name="金卡",
                discount_bp=1_000,
                milli_points_per_yuan=1_500,
                upgrade_cumulative_spend_fen=100_000,
            ),
            level(
                code="diamond",
                name="钻石卡",
                discount_bp=1_500,
                milli_points_per_yuan=2_000,
                upgrade_cumulative_spend_fen=500_000,
            ),
        ],
        recharge_bonus_rules=[
            config_pb2.RechargeBonusRule(min_recharge_fen=10_000, bonus_fen=1_000),
            config_pb2.RechargeBonusRule(min_recharge_fen=50_000, bonus_fen=8_000),
        ],
        points_redemption=config_pb2.PointsRedemption(points_per_yuan=100, max_share_bp=2_000),
        categories=[config_pb2.Category(code="food", name="食品")],
    )


def phone(index: int) -> str:
    return str(PHONE_FIRST + index)


# --- the merchant's admin -----------------------------------------------------------------

# id(core) -> (core, token, actor). The core is kept so that its id is never reused; Core
# takes no weak references.
_ADMINS: dict[int, tuple[Core, str, Actor]] = {}
_ADMINS_LOCK = threading.Lock()


def admin_actor(core: Core, token: str | None = None) -> Actor:
    """MERCHANT's head office admin on this core, made once per Core object: from `token`
    (e.g. `read_token(token_path(folder))`) or, without one, bootstrapped (`again`, so a
    folder that has an admin already gets another token). Authenticated for WhoAmI; an
    actor may act for every method its role allows."""
    with _ADMINS_LOCK:
        if id(core) not in _ADMINS:
            if token is None:
                token, _ = core.bootstrap(MERCHANT, ADMIN_STAFF_CODE, ADMIN_NAME, again=True)
            _ADMINS[id(core)] = (core, token, core.authenticate(token, WHOAMI_METHOD))
        return _ADMINS[id(core)][2]


def admin_token(core: Core) -> str:
    """The token behind `admin_actor(core)` (bootstrapped on first use)."""
    admin_actor(core)
    return _ADMINS[id(core)][1]


def token_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / TOKEN_FILE_NAME


def write_token(path: str | Path, token: str) -> None:
    """Saves a token as `mms token issue --save` does: a new file of mode 0600."""
    save_token(str(path), token)


def read_token(path: str | Path) -> str:
    """A token saved by `write_token`; refused when others may read the file."""
    with open(path, encoding="ascii") as file:
        mode = os.fstat(file.fileno()).st_mode
        assert stat.S_ISREG(mode) and not mode & 0o077, f"{path}: not a 0600 file"
        token = file.read().strip()
    assert token, f"{path} is empty"
    return token


def call_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata of every gRPC call: the staff token (the merchant comes from it)."""
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),)


# --- hand-encoded requests (protobuf wire format) -----------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def _member_by_phone(field_number: int, member_phone: str) -> bytes:
    return _length_delimited(field_number, _length_delimited(2, member_phone.encode()))


_STORED_VALUE_TENDER = transaction_pb2.CheckoutRequest(
    tenders=[common_pb2.Tender(method=common_pb2.STORED_VALUE, take_rest=True)],
    store_code=STORE_CODE,
).SerializeToString()
_CHECKOUT_TAILS = {
    amount: _varint(3 << 3) + _varint(amount) + _STORED_VALUE_TENDER
    for amount in CHECKOUT_AMOUNTS_FEN
}
_CASH_AT_STORE = transaction_pb2.RechargeRequest(
    method=common_pb2.CASH, store_code=STORE_CODE
).SerializeToString()


def encode_checkout(request_id: str, member_phone: str, amount_fen: int) -> bytes:
    """CheckoutRequest: the member by phone pays amount_fen (a CHECKOUT_AMOUNTS_FEN) from
    stored value at STORE_CODE."""
    return (
        _length_delimited(1, request_id.encode())
        + _member_by_phone(2, member_phone)
        + _CHECKOUT_TAILS[amount_fen]
    )


def encode_recharge(
    request_id: str, member_phone: str, amount_fen: int = RECHARGE_AMOUNT_FEN
) -> bytes:
    """RechargeRequest of amount_fen in cash at STORE_CODE (the bonus rules apply)."""
    return (
        _length_delimited(1, request_id.encode())
        + _member_by_phone(2, member_phone)
        + _varint(3 << 3)
        + _varint(amount_fen)
        + _CASH_AT_STORE
    )


def encode_lookup(member_phone: str) -> bytes:
    """GetMemberRequest by phone."""
    return _member_by_phone(1, member_phone)


def check_encoders() -> None:
    """Each hand encoder gives exactly protobuf's bytes (a guard run before every suite)."""
    ref = common_pb2.MemberRef(phone=phone(12_345))
    for amount in CHECKOUT_AMOUNTS_FEN:
        expected = transaction_pb2.CheckoutRequest(
            request_id="r-1",
            member=ref,
            list_amount_fen=amount,
            tenders=[common_pb2.Tender(method=common_pb2.STORED_VALUE, take_rest=True)],
            store_code=STORE_CODE,
        ).SerializeToString()
        assert encode_checkout("r-1", phone(12_345), amount) == expected
    expected = transaction_pb2.RechargeRequest(
        request_id="r-2",
        member=ref,
        amount_fen=RECHARGE_AMOUNT_FEN,
        method=common_pb2.CASH,
        store_code=STORE_CODE,
    ).SerializeToString()
    assert encode_recharge("r-2", phone(12_345)) == expected
    expected = transaction_pb2.RechargeRequest(
        request_id="r-3",
        member=ref,
        amount_fen=HOT_RECHARGE_FEN,
        method=common_pb2.CASH,
        store_code=STORE_CODE,
    ).SerializeToString()
    assert encode_recharge("r-3", phone(12_345), HOT_RECHARGE_FEN) == expected
    assert (
        encode_lookup(phone(12_345)) == member_pb2.GetMemberRequest(member=ref).SerializeToString()
    )


# --- numbers ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence; 0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def latency_summary_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    values = sorted(latencies_s)
    summary = {
        name: round(percentile(values, fraction) * 1e3, 3)
        for name, fraction in (("p50_ms", 0.5), ("p99_ms", 0.99), ("p999_ms", 0.999))
    }
    summary["max_ms"] = round(values[-1] * 1e3, 3) if values else 0.0
    return summary


def histogram_quantile(bounds: Sequence[float], buckets: Sequence[int], fraction: float) -> float:
    """The upper bound of the bucket holding the given fraction of observations (bucket i
    counts observations <= bounds[i]; a last extra bucket counts the rest: inf)."""
    total = sum(buckets)
    if not total:
        return 0.0
    running = 0
    for index, count in enumerate(buckets):
        running += count
        if running >= fraction * total:
            return float(bounds[index]) if index < len(bounds) else float("inf")
    return float("inf")


# --- the machine --------------------------------------------------------------------------


def machine() -> dict[str, object]:
    """What a figure depends on: CPUs, load, kernel, Python, the disk the data is on."""
    load_1m, load_5m, load_15m = os.getloadavg()
    info: dict[str, object] = {
        "cpu_count": os.cpu_count(),
        "load_average": [round(load_1m, 2), round(load_5m, 2), round(load_15m, 2)],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
    }
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def warn_if_loaded() -> bool:
    """Prints a warning when the machine is busy; returns whether it is."""
    load_1m = os.getloadavg()[0]
    if load_1m > QUIET_LOAD_AVERAGE:
        print(
            f"WARNING: 1-minute load average is {load_1m:.2f} (> {QUIET_LOAD_AVERAGE}) on"
            f" {os.cpu_count()} CPUs: other work is running, the figures will be low and noisy",
            flush=True,
        )
        return True
    return False


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_memory_bytes(pid: int) -> dict[str, int]:
    """RSS of a process, split into anonymous memory and mapped files (LMDB's map)."""
    wanted = {"VmRSS": "rss_bytes", "RssAnon": "rss_anon_bytes", "RssFile": "rss_file_bytes"}
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in wanted:
                found[wanted[key]] = int(value.split()[0]) * 1024
    return found


# --- servers ------------------------------------------------------------------------------


@dataclass
class Server:
    """A server process started by the suite, with its address and output."""

    process: subprocess.Popen[str]
    address: str = ""
    # The token clients send (call_metadata); the caller sets it.
    token: str = ""
    metrics_url: str = ""
    started_s: float = 0.0
    output: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, stop_signal: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(stop_signal)
        try:
            return self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)


def start_server(command: Sequence[str], needs_metrics: bool = True) -> Server:
    """Starts a server that prints `serving gRPC on HOST:PORT` (and `metrics on URL`) and
    waits until it does; `started_s` is the time from exec to that line."""
    began = time.perf_counter()
    process = subprocess.Popen(
        list(command),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = Server(process=process)
    assert process.stdout is not None
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not (server.address and (server.metrics_url or not needs_metrics)):
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("server exited early:\n" + "".join(server.output))
        server.output.append(line)
        if match := _GRPC_LINE.search(line):
            server.address = match.group(1)
            server.started_s = time.perf_counter() - began
        if match := _METRICS_LINE.search(line):
            server.metrics_url = match.group(1)
        if time.monotonic() > deadline:
            server.stop(signal.SIGKILL)
            raise RuntimeError("server did not start:\n" + "".join(server.output))
    threading.Thread(
        target=lambda: server.output.extend(process.stdout),  # type: ignore[arg-type]
        name="server-output",
        daemon=True,
    ).start()
    return server


def mms_serve_command(data_dir: str | Path, durable: bool = True) -> list[str]:
    """The real server: `mms serve` (the console script) on loopback, free ports."""
    mms = shutil.which("mms", path=str(Path(sys.executable).parent))
    prefix = [mms] if mms else [sys.executable, "-m", "engine"]
    command = [
        *prefix, "serve",
        "--data", str(data_dir),
        "--listen", "127.0.0.1:0",
        "--metrics-port", "0",
    ]  # fmt: skip
    if not durable:
        command.append("--no-sync")
    return command
