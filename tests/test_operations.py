"""What an operator sees: metrics, health, reflection, graceful shutdown, backups."""

from __future__ import annotations

import os
import stat
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from client import Client, error_reason
from conftest import RunningServer, WithMetadata
from engine.proto import admin_pb2, admin_pb2_grpc, common_pb2, transaction_pb2

REPLAYED = ("mms-replayed", "1")


def scrape(server: RunningServer) -> dict[str, dict]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(families: dict, family: str, name: str, **labels) -> float:
    for metric in families[family].samples:
        if metric.name == name and all(metric.labels.get(k) == v for k, v in labels.items()):
            return metric.value
    raise AssertionError(f"no sample {name} {labels}")


def test_metrics_count_rpcs_by_method_and_code(
    server: RunningServer, channel: grpc.Channel
) -> None:
    client = Client(channel)
    client.apply()
    client.register("13800138000")
    client.recharge(10_000, phone="13800138000")
    for _ in range(3):
        client.checkout(1_000, phone="13800138000")
    with pytest.raises(grpc.RpcError):
        client.checkout(1_000_000, phone="13800138000")
    with pytest.raises(grpc.RpcError):
        client.get(phone="13900000000")

    families = scrape(server)
    checkout = dict(
        grpc_type="unary", grpc_service="mms.v1.TransactionService", grpc_method="Checkout"
    )
    handled = "grpc_server_handled"
    assert sample(families, handled, "grpc_server_handled_total", grpc_code="OK", **checkout) == 3
    failed = sample(
        families, handled, "grpc_server_handled_total", grpc_code="FailedPrecondition", **checkout
    )
    assert failed == 1
    get = dict(grpc_service="mms.v1.MemberService", grpc_method="GetMember")
    assert sample(families, handled, "grpc_server_handled_total", grpc_code="NotFound", **get) == 1
    assert sample(families, "grpc_server_started", "grpc_server_started_total", **checkout) == 4
    seconds = "grpc_server_handling_seconds"
    assert sample(families, seconds, seconds + "_count", **checkout) == 4

    # writer: 6 mutating requests committed, in at most 6 batches
    assert sample(families, "mms_writer_batch_size", "mms_writer_batch_size_sum") == 7
    batches = sample(families, "mms_writer_batch_size", "mms_writer_batch_size_count")
    assert 1 <= batches <= 7
    assert (
        sample(families, "mms_writer_commit_seconds", "mms_writer_commit_seconds_count") == batches
    )
    used = sample(families, "mms_lmdb_map_used_bytes", "mms_lmdb_map_used_bytes")
    size = sample(families, "mms_lmdb_map_size_bytes", "mms_lmdb_map_size_bytes")
    assert 0 < used < size
    labels = {k for f in families.values() for s in f.samples for k in s.labels}
    assert labels <= {"grpc_type", "grpc_service", "grpc_method", "grpc_code", "le"}


def test_retries_are_marked_and_counted(server: RunningServer, channel: grpc.Channel) -> None:
    client = Client(channel)
    client.apply()
    client.register("13800138000")
    client.recharge(10_000, phone="13800138000", request_id="pos1-r1")
    request = transaction_pb2.CheckoutRequest(
        request_id="pos1-c1",
        member=common_pb2.MemberRef(phone="13800138000"),
        list_amount_fen=1_000,
        tenders=[common_pb2.Tender(method=common_pb2.STORED_VALUE, take_rest=True)],
    )
    checkout = client.transactions.Checkout
    first, call = checkout.with_call(request, timeout=10, metadata=client.metadata)
    assert REPLAYED not in call.trailing_metadata()
    again, call = checkout.with_call(request, timeout=10, metadata=client.metadata)
    assert again == first and REPLAYED in call.trailing_metadata()
    # A refusal given again is marked too: the POS knows the retry changed nothing.
    request.request_id, request.list_amount_fen = "pos1-c2", 1_000_000
    for replayed in (False, True):
        with pytest.raises(grpc.RpcError) as caught:
            checkout(request, timeout=10, metadata=client.metadata)
        assert error_reason(caught.value) == "INSUFFICIENT_BALANCE"
        assert (REPLAYED in caught.value.trailing_metadata()) == replayed
    assert client.get(phone="13800138000").balances.principal_fen == 9_000

    families = scrape(server)
    replays = "mms_requests_replayed"
    labels = dict(grpc_service="mms.v1.TransactionService", grpc_method="Checkout")
    assert sample(families, replays, replays + "_total", **labels) == 2


def test_health_and_reflection(server: RunningServer, channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "mms.v1.TransactionService", "mms.v1.MemberService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
    names = {service.name for service in answer.list_services_response.service}
    assert {
        "mms.v1.ConfigService",
        "mms.v1.MemberService",
        "mms.v1.TransactionService",
        "mms.v1.AdminService",
        "grpc.health.v1.Health",
    } <= names
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="mms.v1.CheckoutRequest"
    )
    (answer,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
    assert answer.file_descriptor_response.file_descriptor_proto


def test_health_watchers_hold_no_worker_thread(server: RunningServer) -> None:
    """Load balancers keep Watch streams open for good. More of them than the server has
    worker threads must not starve the calls cashiers make; when they end, they are
    counted like any RPC."""
    watchers = 80  # the server has 64 workers
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        streams = [
            health.Watch(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(watchers)
        ]
        try:
            for stream in streams:
                assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
            client = Client(channel)
            client.apply()
            assert client.register("13800138000").member.member_id == 1
        finally:
            for stream in streams:
                stream.cancel()
    watch = dict(grpc_service="grpc.health.v1.Health", grpc_method="Watch")
    handled = "grpc_server_handled_total"
    deadline = time.monotonic() + 10
    while True:  # the server hears of each cancellation on its own time
        families = scrape(server)
        try:
            ended = sample(families, "grpc_server_handled", handled, grpc_code="Canceled", **watch)
        except AssertionError:
            ended = 0
        if ended == watchers or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ended == watchers
    started = sample(families, "grpc_server_started", "grpc_server_started_total", **watch)
    assert started == watchers


def test_sigterm_exits_cleanly_and_says_so(server: RunningServer) -> None:
    assert server.stop() == 0
    output = "".join(server.output)
    assert "shutting down" in output and "stopped" in output


def test_backup_refuses_a_non_empty_destination(server: RunningServer, tmp_path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with server.channel() as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Backup(admin_pb2.BackupRequest(destination_dir=str(tmp_path / "busy")), timeout=30)
        assert error_reason(caught.value) == "BACKUP_FAILED"
        answer = stub.Backup(
            admin_pb2.BackupRequest(destination_dir=str(tmp_path / "b")), timeout=30
        )
        assert answer.size_bytes > 0 and answer.path.endswith("data.mdb")
        # The copy holds phones, names and PIN hashes: its owner's alone.
        assert stat.S_IMODE(os.stat(answer.path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "b").st_mode) == 0o700


def test_the_auditor_refuses_a_live_data_folder_and_reads_it_once_stopped(
    server: RunningServer, tmp_path
) -> None:
    """Reading a live environment without its lock would read pages the writer reuses:
    the auditor says to audit a backup instead, and audits the folder once stopped."""
    from engine import audit

    with server.channel() as channel:
        client = Client(channel)
        client.apply()
        client.register("13800138000")
        client.recharge(10_000, phone="13800138000")
    with pytest.raises(audit.AuditError, match="open in a running server: audit a backup"):
        audit.audit(str(server.data_dir))
    assert server.stop() == 0
    report = audit.audit(str(server.data_dir))
    assert report.problems == []
    assert report.totals["default"].principal_fen == 10_000


def test_promtool_finds_nothing_to_complain_about(
    server: RunningServer, channel: grpc.Channel
) -> None:
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    client = Client(channel)
    client.apply()
    client.register("13800138000")
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read()
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == b""


def test_commit_bucket_bounds_are_exact_decimals() -> None:
    from engine.metrics import micros_as_seconds_text

    assert micros_as_seconds_text(100) == "0.0001"
    assert micros_as_seconds_text(2_500) == "0.0025"
    assert micros_as_seconds_text(1_000_000) == "1"
    assert micros_as_seconds_text(2_500_000) == "2.5"


def test_the_extension_matches_its_stub() -> None:
    """engine/_core.pyi names what the built module offers, no more, no less."""
    import ast
    import inspect
    from pathlib import Path

    from engine import _core

    stub = ast.parse((Path(inspect.getfile(_core)).parent / "_core.pyi").read_text())
    classes = {node.name: node for node in stub.body if isinstance(node, ast.ClassDef)}
    assert set(classes) == {"Actor", "Core", "CoreError"}
    for name in ("Actor", "Core"):
        stubbed = {f.name for f in classes[name].body if isinstance(f, ast.FunctionDef)}
        built = {member for member in dir(getattr(_core, name)) if not member.startswith("_")}
        assert stubbed - {"__init__"} == built, name
    assert issubclass(_core.CoreError, Exception)


def test_health_turns_not_serving_when_the_core_stops_answering(tmp_path) -> None:
    """A core that can no longer take requests (its writer gone) takes the server out of
    rotation: the first refused call flips health to NOT_SERVING."""
    from prometheus_client import CollectorRegistry

    from client import DEMO_CONFIG
    from engine import Core
    from engine.server import create_server

    core = Core(str(tmp_path / "data"))
    token, _ = core.bootstrap("default", "admin", "Admin")
    server, port, _ = create_server(core, "127.0.0.1:0", registry=CollectorRegistry())
    server.start()
    try:
        authorization = (("authorization", f"Bearer {token}"),)
        with grpc.intercept_channel(
            grpc.insecure_channel(f"127.0.0.1:{port}"), WithMetadata(authorization)
        ) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            serving = health_pb2.HealthCheckResponse.SERVING
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == serving
            Client(channel).apply(DEMO_CONFIG)
            core.close()  # what a stopped writer looks like from the outside
            with pytest.raises(grpc.RpcError) as caught:
                Client(channel).apply(DEMO_CONFIG)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_reason(caught.value) == "SHUTTING_DOWN"
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        server.stop(0).wait()
        core.close()


def test_the_server_takes_its_time_from_a_clock_file_when_told(tmp_path) -> None:
    """`--clock-file` (tests only) sets the time the server stamps on what it does, read
    afresh at each request; the server refuses to start on a file without a time."""
    clock = tmp_path / "now_ms"
    first_ms = 1_767_225_600_000  # 2026-01-01 00:00 UTC
    clock.write_text(f"{first_ms}\n")
    running = RunningServer(tmp_path / "data", ["--clock-file", str(clock)])
    running.start()
    try:
        assert any("TEST CLOCK" in line for line in running.output)
        with running.channel() as channel:
            client = Client(channel)
            client.apply()
            client.register("13800138000")
            assert client.recharge(10_000, phone="13800138000").at_ms == first_ms
            later_ms = first_ms + 400 * 86_400_000
            clock.write_text(str(later_ms))
            assert client.checkout(1_000, phone="13800138000").at_ms == later_ms
            clock.write_text("not a time")  # the last good reading stands
            assert client.checkout(1_000, phone="13800138000").at_ms == later_ms
    finally:
        assert running.stop() == 0

    clock.write_text("-5")
    refused = RunningServer(tmp_path / "data", ["--clock-file", str(clock)])
    with pytest.raises(RuntimeError, match="clock file .* must hold milliseconds"):
        refused.start()


RACE_SCRIPT = """
import sys, threading
from engine._core import Core
from engine.proto import config_pb2, member_pb2
sys.path.insert(0, "tests")
from client import DEMO_CONFIG

growths = 0
for round in range(int(sys.argv[2])):
    core = Core(f"{sys.argv[1]}/{round}", durable=False, map_size_bytes=64 * 1024)
    config = config_pb2.ApplyConfigRequest(request_id="config", config=DEMO_CONFIG)
    token, _ = core.bootstrap("m", "admin", "Admin")
    actor = core.authenticate(token, "/mms.v1.AuthService/WhoAmI")
    core.submit("/mms.v1.ConfigService/ApplyConfig", actor, config.SerializeToString())
    done = threading.Event()

    def scrape():
        while not done.is_set():
            core.stats()

    scraper = threading.Thread(target=scrape)
    scraper.start()
    for chunk in range(12):
        rows = [
            member_pb2.RegisterMemberRequest(phone=f"13{chunk}{row:08d}", name="x" * 60)
            for row in range(1000)
        ]
        request = member_pb2.ImportMembersRequest(request_id=f"import-{chunk}", rows=rows)
        core.submit("/mms.v1.MemberService/ImportMembers", actor, request.SerializeToString())
    done.set()
    scraper.join()
    growths += core.stats()["map_growths"]
    core.close()
print("growths", growths)
"""
RACE_ROUNDS = 20


def test_scraping_metrics_while_the_map_grows(tmp_path) -> None:
    """/metrics reads the map's size while the writer may be growing it (LMDB unmaps and
    maps it again): the read must wait for the growth, not touch the old mapping. In a
    child process, so that a regression (a segfault) fails this test, not the run."""
    import subprocess
    import sys

    from conftest import REPO

    result = subprocess.run(
        [sys.executable, "-c", RACE_SCRIPT, str(tmp_path), str(RACE_ROUNDS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    growths = int(result.stdout.split()[-1])
    assert growths >= 5 * RACE_ROUNDS  # 64 KiB to 12,000 members: grown again and again
