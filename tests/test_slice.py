"""The first vertical slice through a real server: config, register, recharge, checkout."""

from __future__ import annotations

import grpc
import pytest

from client import DEMO_CONFIG, PM, Client, error_reason, exact, take_rest
from engine.proto import common_pb2, config_pb2


@pytest.fixture
def client(channel: grpc.Channel) -> Client:
    client = Client(channel)
    client.apply()
    return client


def balances(client: Client, **key) -> tuple[int, int, int]:
    shown = client.get(**key).balances
    return shown.principal_fen, shown.bonus_fen, shown.points


def test_config_reads_back_as_applied(channel: grpc.Channel) -> None:
    client = Client(channel)
    applied = client.apply()
    assert applied.version == 1
    assert applied.applied_at_ms > 0
    read = client.config.GetConfig(config_pb2.GetConfigRequest(), metadata=client.metadata).config
    assert read == applied
    expected = config_pb2.MerchantConfig()
    expected.CopyFrom(DEMO_CONFIG)
    expected.version, expected.applied_at_ms = 1, applied.applied_at_ms
    assert read == expected
    assert client.apply().version == 2


def test_member_found_by_id_phone_and_card(client: Client) -> None:
    registered = client.register("13800138000", name=" 李四 ", card_no="VIP0001", store_code="S002")
    member = registered.member
    assert (member.member_id, member.name, member.level_code) == (1, "李四", "regular")
    assert member.store_code == "S002"
    for key in ({"member_id": 1}, {"phone": "13800138000"}, {"card_no": "VIP0001"}):
        shown = client.get(**key)
        assert shown.member == member
        assert shown.level_name == "普通 Regular"


def test_recharge_with_bonus_then_discounted_checkout_with_points(client: Client) -> None:
    client.register("13800138000", card_no="C0001")
    recharged = client.recharge(50_000, phone="13800138000")  # 充500送120
    assert (recharged.amount_fen, recharged.bonus_fen) == (50_000, 12_000)
    assert balances(client, phone="13800138000") == (50_000, 12_000, 0)

    # ¥58.50 at the regular level: no discount, 58 points earned (1 per yuan, rounded down).
    first = client.checkout(5_850, card_no="C0001")
    assert (first.list_amount_fen, first.discount_fen, first.amount_due_fen) == (5_850, 0, 5_850)
    assert [(p.method, p.amount_fen, p.principal_fen, p.bonus_fen) for p in first.payments] == [
        (PM.STORED_VALUE, 5_850, 5_850, 0)
    ]
    assert first.points_earned == 58
    assert (first.balances.principal_fen, first.balances.bonus_fen, first.balances.points) == (
        44_150,
        12_000,
        58,
    )
    assert first.ledger_seq == recharged.ledger_seq + 1

    # ¥1000 of spend reaches silver in the crossing checkout; the discount starts after it.
    big = client.checkout(
        94_150, tenders=[take_rest(PM.STORED_VALUE), take_rest(PM.CASH)], member_id=1
    )
    assert big.discount_fen == 0
    assert [(p.method, p.amount_fen) for p in big.payments] == [
        (PM.STORED_VALUE, 56_150),
        (PM.CASH, 38_000),
    ]
    assert (big.level_before, big.level_after, big.level_upgraded) == ("regular", "silver", True)
    assert big.balances.principal_fen == 0 and big.balances.bonus_fen == 0

    # Silver: 5% off ¥100.01 = ¥95.0095 -> ¥95.01; 50 points pay ¥0.50; cash pays the rest.
    client.recharge(10_000, phone="13800138000")  # +¥20 bonus
    silver = client.checkout(
        10_001,
        points=50,
        tenders=[exact(PM.STORED_VALUE, 9_000), take_rest(PM.CASH, cash_received_fen=1_000)],
        phone="13800138000",
    )
    assert (silver.discount_bp, silver.discount_fen, silver.amount_due_fen) == (500, 500, 9_501)
    assert (silver.points_redeemed, silver.points_value_fen) == (50, 50)
    cash = silver.payments[1]
    assert (cash.amount_fen, cash.cash_received_fen, cash.change_fen) == (451, 1_000, 549)
    assert silver.points_earned == 113  # ¥94.51 paid x 1.2 points per yuan = 113.41, rounded down
    member = client.get(phone="13800138000")
    assert (member.balances.principal_fen, member.balances.bonus_fen) == (1_000, 2_000)
    assert member.balances.points == 58 + 941 + 113 - 50
    assert member.member.cumulative_spend_fen == 5_850 + 94_150 + 9_501
    assert member.member.cumulative_recharge_fen == 60_000


def test_walk_in_customer_pays_cash_with_change(client: Client) -> None:
    out = client.checkout(5_850, tenders=[take_rest(PM.CASH, cash_received_fen=10_000)])
    assert out.member_id == 0
    assert (out.discount_fen, out.amount_due_fen, out.points_earned) == (0, 5_850, 0)
    assert (out.payments[0].cash_received_fen, out.payments[0].change_fen) == (10_000, 4_150)
    assert not out.HasField("balances")


def test_split_payment_across_methods(client: Client) -> None:
    out = client.checkout(
        30_000,
        tenders=[exact(PM.CASH, 10_000), exact(PM.BANK_CARD, 15_000), take_rest(PM.SCAN_PAY)],
    )
    assert [(p.method, p.amount_fen) for p in out.payments] == [
        (PM.CASH, 10_000),
        (PM.BANK_CARD, 15_000),
        (PM.SCAN_PAY, 5_000),
    ]


def test_merchants_are_separate(channel: grpc.Channel, client: Client) -> None:
    client.register("13800138000")
    other = Client(channel, merchant="other-chain")
    with pytest.raises(grpc.RpcError) as caught:
        other.register("13800138000")
    assert error_reason(caught.value) == "MERCHANT_NOT_CONFIGURED"
    other.apply()
    assert other.register("13800138000").member.member_id == 1
    client.recharge(10_000, phone="13800138000")
    assert other.get(phone="13800138000").balances == common_pb2.Balances()
