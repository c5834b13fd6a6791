"""What a cashier counts on: no double charge, no overdraft under load, nothing lost."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from client import PM, Client, error_reason, take_rest
from conftest import RunningServer
from engine import audit
from engine.proto import admin_pb2, admin_pb2_grpc, common_pb2, config_pb2, transaction_pb2

PHONE = "13800138000"


def flat_config() -> config_pb2.MerchantConfig:
    """One level, no discount, no bonus: every ¥10 checkout takes exactly ¥10."""
    return config_pb2.MerchantConfig(
        name="flat",
        stores=[config_pb2.Store(code="S001", name="总店")],
        levels=[config_pb2.Level(code="regular", name="普通", milli_points_per_yuan=1000)],
    )


def backup_and_audit(server: RunningServer, tmp_path, name: str) -> audit.AuditReport:
    with server.channel() as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        stub.Backup(admin_pb2.BackupRequest(destination_dir=str(tmp_path / name)), timeout=60)
    return audit.audit(str(tmp_path / name))


def test_200_concurrent_checkouts_against_1000_yuan(server: RunningServer, tmp_path) -> None:
    with server.channel() as channel:
        client = Client(channel)
        client.apply(flat_config())
        client.register(PHONE)
        client.recharge(100_000, phone=PHONE)
        start = threading.Barrier(200)

        def one(index: int) -> str:
            start.wait()
            try:
                client.checkout(1_000, phone=PHONE, request_id=f"burst-{index}")
            except grpc.RpcError as error:
                return error_reason(error)
            return "OK"

        with ThreadPoolExecutor(max_workers=200) as pool:
            outcomes = list(pool.map(one, range(200)))
        assert outcomes.count("OK") == 100
        assert outcomes.count("INSUFFICIENT_BALANCE") == 100
        shown = client.get(phone=PHONE)
        assert (shown.balances.principal_fen, shown.balances.bonus_fen) == (0, 0)
        assert shown.balances.points == 1_000
        assert shown.member.cumulative_spend_fen == 100_000
    report = backup_and_audit(server, tmp_path, "after-burst")
    assert report.problems == []
    assert report.counts["ledger_entries"] == 101
    totals = report.totals["default"]
    assert (totals.principal_fen, totals.bonus_fen, totals.points) == (0, 0, 1_000)


def test_a_retried_checkout_charges_once(server: RunningServer) -> None:
    with server.channel() as channel:
        client = Client(channel)
        client.apply()
        client.register(PHONE)
        client.recharge(10_000, phone=PHONE)
        first = client.checkout(2_500, phone=PHONE, request_id="pos3-20261125-0001")
        # The POS timed out and sends the same request again, twice, concurrently.
        with ThreadPoolExecutor(max_workers=2) as pool:
            retries = list(
                pool.map(
                    lambda _: client.checkout(2_500, phone=PHONE, request_id="pos3-20261125-0001"),
                    range(2),
                )
            )
        assert all(retry == first for retry in retries)
        assert client.get(phone=PHONE).balances.principal_fen == 7_500
        # A retried failure answers the same failure.
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as caught:
                client.checkout(50_000, phone=PHONE, request_id="pos3-20261125-0002")
            assert error_reason(caught.value) == "INSUFFICIENT_BALANCE"


def test_restart_keeps_every_balance_point_and_level(server: RunningServer, tmp_path) -> None:
    with server.channel() as channel:
        client = Client(channel)
        client.apply()
        for index in range(5):
            client.register(f"1380013800{index}", card_no=f"CARD{index:04d}")
            client.recharge(10_000 * (index + 1), phone=f"1380013800{index}")
            client.checkout(3_333 * (index + 1), phone=f"1380013800{index}")
        client.recharge(300_000, phone="13800138004")  # single recharge: gold
        before = [client.get(member_id=i) for i in range(1, 6)]
        assert before[4].member.level_code == "gold"
        config_before = client.config.GetConfig(config_pb2.GetConfigRequest()).config
    server.restart()
    with server.channel() as channel:
        client = Client(channel)
        after = [client.get(member_id=i) for i in range(1, 6)]
        assert after == before
        assert client.config.GetConfig(config_pb2.GetConfigRequest()).config == config_before
        # and it keeps going from where it was
        assert client.register("13900139000").member.member_id == 6
        gold = client.checkout(10_000, member_id=5)
        assert gold.discount_fen == 1_000
    report = backup_and_audit(server, tmp_path, "after-restart")
    assert report.problems == []


@pytest.mark.parametrize(
    "stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"]
)
def test_a_stop_under_load_loses_nothing_acknowledged(
    server: RunningServer, tmp_path, stop_signal: int
) -> None:
    """SIGTERM drains; SIGKILL (a crash, a power cut as far as the process can tell) cuts
    batches off mid-flight. Either way every checkout a cashier was told about is there."""
    with server.channel() as channel:
        client = Client(channel)
        client.apply(flat_config())
        client.register(PHONE)
        client.recharge(1_000_000, phone=PHONE)
    acknowledged: list[str] = []
    stop = threading.Event()

    def cashier(lane: int) -> None:
        with server.channel() as channel:
            client = Client(channel)
            for index in range(10_000):
                if stop.is_set():
                    return
                request_id = f"lane{lane}-{index}"
                try:
                    client.checkout(
                        100,
                        tenders=[take_rest(PM.STORED_VALUE)],
                        request_id=request_id,
                        phone=PHONE,
                    )
                except grpc.RpcError:
                    return
                acknowledged.append(request_id)

    lanes = [threading.Thread(target=cashier, args=(lane,)) for lane in range(8)]
    for lane in lanes:
        lane.start()
    while len(acknowledged) < 200:
        threading.Event().wait(0.01)
    code = server.stop(stop_signal)
    assert code == (0 if stop_signal == signal.SIGTERM else -signal.SIGKILL)
    stop.set()
    for lane in lanes:
        lane.join()
    server.start()
    with server.channel() as channel:
        client = Client(channel)
        shown = client.get(phone=PHONE)
        # every acknowledged checkout is there: a retry is answered from its record
        # (marked as a replay) without charging again
        for request_id in acknowledged:
            replay, call = client.transactions.Checkout.with_call(
                transaction_pb2.CheckoutRequest(
                    request_id=request_id,
                    member=common_pb2.MemberRef(phone=PHONE),
                    list_amount_fen=100,
                    tenders=[take_rest(PM.STORED_VALUE)],
                ),
                timeout=30,
                metadata=client.metadata,
            )
            assert replay.amount_due_fen == 100
            assert ("mms-replayed", "1") in call.trailing_metadata()
        assert client.get(phone=PHONE) == shown
        assert shown.member.cumulative_spend_fen >= 100 * len(acknowledged)
    report = backup_and_audit(server, tmp_path, f"after-{stop_signal}")
    assert report.problems == []
    # the books hold exactly the checkouts that were committed, acknowledged or not, each
    # whole: its spend and the stored value it took are there with its entry, or none is
    entries = report.counts["ledger_entries"]
    assert shown.member.cumulative_spend_fen == 100 * (entries - 1)
    assert shown.balances.principal_fen == 1_000_000 - 100 * (entries - 1)
