"""Every bad input gets a clear status and reason and changes nothing."""

from __future__ import annotations

import grpc
import pytest

from client import PM, Client, error_reason, exact, take_rest
from engine.proto import common_pb2, config_pb2, member_pb2

PHONE = "13800138000"
SC = grpc.StatusCode


@pytest.fixture
def client(channel: grpc.Channel) -> Client:
    client = Client(channel)
    client.apply()
    client.register(PHONE, card_no="C0001")
    client.recharge(10_000, phone=PHONE)  # principal ¥100, bonus ¥20
    client.checkout(1_000, phone=PHONE)  # 10 points
    return client


def expect_error(call, code: grpc.StatusCode, reason: str) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    assert error_reason(caught.value) == reason
    assert caught.value.details(), "a human message is expected"
    return caught.value.details()


def state(client: Client) -> tuple:
    shown = client.get(phone=PHONE)
    return (
        shown.balances.principal_fen,
        shown.balances.bonus_fen,
        shown.balances.points,
        shown.member.cumulative_spend_fen,
        shown.member.level_code,
    )


BAD_CHECKOUTS = [
    ("zero", dict(list_fen=0), SC.INVALID_ARGUMENT, "AMOUNT_NOT_POSITIVE"),
    ("negative", dict(list_fen=-500), SC.INVALID_ARGUMENT, "AMOUNT_NOT_POSITIVE"),
    ("absurd", dict(list_fen=10**15), SC.INVALID_ARGUMENT, "AMOUNT_TOO_LARGE"),
    ("over balance", dict(list_fen=11_001), SC.FAILED_PRECONDITION, "INSUFFICIENT_BALANCE"),
    (
        "points beyond balance",
        dict(list_fen=1_000, points=11),
        SC.FAILED_PRECONDITION,
        "INSUFFICIENT_POINTS",
    ),
    ("points beyond cap", dict(list_fen=10, points=6), SC.INVALID_ARGUMENT, "POINTS_OVER_CAP"),
    ("negative points", dict(list_fen=1_000, points=-1), SC.INVALID_ARGUMENT, "POINTS_INVALID"),
    (
        "short payments",
        dict(list_fen=1_000, tenders=[exact(PM.CASH, 999)]),
        SC.INVALID_ARGUMENT,
        "PAYMENTS_MISMATCH",
    ),
    (
        "over payments",
        dict(list_fen=1_000, tenders=[exact(PM.CASH, 600), exact(PM.BANK_CARD, 500)]),
        SC.INVALID_ARGUMENT,
        "PAYMENTS_MISMATCH",
    ),
    ("no tenders", dict(list_fen=1_000, tenders=[]), SC.INVALID_ARGUMENT, "PAYMENTS_MISMATCH"),
    (
        "cash short",
        dict(list_fen=1_000, tenders=[take_rest(PM.CASH, cash_received_fen=999)]),
        SC.INVALID_ARGUMENT,
        "CASH_RECEIVED_TOO_LOW",
    ),
    ("unknown store", dict(list_fen=1_000, store="S999"), SC.NOT_FOUND, "STORE_NOT_FOUND"),
]


@pytest.mark.parametrize(
    "kwargs,code,reason", [case[1:] for case in BAD_CHECKOUTS], ids=[c[0] for c in BAD_CHECKOUTS]
)
def test_bad_checkout_changes_nothing(client: Client, kwargs, code, reason) -> None:
    before = state(client)
    expect_error(lambda: client.checkout(phone=PHONE, **kwargs), code, reason)
    assert state(client) == before


@pytest.mark.parametrize(
    "key,code,reason",
    [
        ({"phone": "13900000000"}, SC.NOT_FOUND, "MEMBER_NOT_FOUND"),
        ({"card_no": "NOPE0000"}, SC.NOT_FOUND, "CARD_NOT_FOUND"),
        ({"member_id": 999}, SC.NOT_FOUND, "MEMBER_NOT_FOUND"),
        ({"phone": "138001380"}, SC.INVALID_ARGUMENT, "PHONE_MALFORMED"),
        ({"phone": "23800138000"}, SC.INVALID_ARGUMENT, "PHONE_MALFORMED"),
    ],
)
def test_unknown_or_malformed_member(client: Client, key, code, reason) -> None:
    expect_error(lambda: client.get(**key), code, reason)
    expect_error(lambda: client.recharge(10_000, **key), code, reason)
    expect_error(lambda: client.checkout(1_000, **key), code, reason)


@pytest.mark.parametrize(
    "amount,reason",
    [(0, "AMOUNT_NOT_POSITIVE"), (-1, "AMOUNT_NOT_POSITIVE"), (10**12, "AMOUNT_TOO_LARGE")],
)
def test_bad_recharge_amounts(client: Client, amount: int, reason: str) -> None:
    before = state(client)
    expect_error(lambda: client.recharge(amount, phone=PHONE), SC.INVALID_ARGUMENT, reason)
    assert state(client) == before


def test_walk_in_cannot_use_stored_value_or_points(client: Client) -> None:
    expect_error(lambda: client.checkout(1_000), SC.INVALID_ARGUMENT, "STORED_VALUE_NEEDS_MEMBER")
    expect_error(
        lambda: client.checkout(1_000, points=10, tenders=[take_rest(PM.CASH)]),
        SC.INVALID_ARGUMENT,
        "POINTS_INVALID",
    )


@pytest.mark.parametrize(
    "fields,code,reason",
    [
        ({"phone": "1380013800"}, SC.INVALID_ARGUMENT, "PHONE_MALFORMED"),
        ({"phone": "+852 13800138001"}, SC.INVALID_ARGUMENT, "PHONE_MALFORMED"),
        ({"phone": PHONE}, SC.ALREADY_EXISTS, "PHONE_TAKEN"),
        ({"phone": "13800138001", "card_no": "C0001"}, SC.ALREADY_EXISTS, "CARD_TAKEN"),
        ({"phone": "13800138001", "name": "名" * 65}, SC.INVALID_ARGUMENT, "NAME_INVALID"),
        ({"phone": "13800138001", "name": "x" * 100_000}, SC.INVALID_ARGUMENT, "NAME_INVALID"),
        ({"phone": "13800138001", "name": "   "}, SC.INVALID_ARGUMENT, "NAME_INVALID"),
        ({"phone": "13800138001", "card_no": "a b"}, SC.INVALID_ARGUMENT, "CARD_NUMBER_INVALID"),
        ({"phone": "13800138001", "store_code": "S404"}, SC.NOT_FOUND, "STORE_NOT_FOUND"),
        (
            {"phone": "13800138001", "request_id": "x" * 65},
            SC.INVALID_ARGUMENT,
            "REQUEST_ID_INVALID",
        ),
    ],
)
def test_bad_registration_registers_nobody(client: Client, fields, code, reason) -> None:
    phone = fields.pop("phone")
    expect_error(lambda: client.register(phone, **fields), code, reason)
    expect_error(lambda: client.get(member_id=2), SC.NOT_FOUND, "MEMBER_NOT_FOUND")


def test_request_id_reused_for_a_different_request(client: Client) -> None:
    client.checkout(500, phone=PHONE, request_id="pos1-000042")
    before = state(client)
    expect_error(
        lambda: client.checkout(600, phone=PHONE, request_id="pos1-000042"),
        SC.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    assert state(client) == before


def test_bad_config_is_refused_whole(client: Client) -> None:
    worse = config_pb2.MerchantConfig()
    worse.CopyFrom(client.config.GetConfig(config_pb2.GetConfigRequest()).config)
    worse.levels[1].discount_bp = 0  # silver no better than regular in anything
    worse.levels[1].milli_points_per_yuan = 1000
    expect_error(lambda: client.apply(worse), SC.INVALID_ARGUMENT, "CONFIG_INVALID")
    fewer = config_pb2.MerchantConfig()
    fewer.CopyFrom(worse)
    fewer.levels[1].discount_bp = 500
    fewer.levels[1].milli_points_per_yuan = 1200
    del fewer.levels[2]
    expect_error(lambda: client.apply(fewer), SC.FAILED_PRECONDITION, "LEVEL_IN_USE")
    assert client.config.GetConfig(config_pb2.GetConfigRequest()).config.version == 1


def test_garbage_bytes_are_refused(channel: grpc.Channel, client: Client) -> None:
    raw = channel.unary_unary("/mms.v1.TransactionService/Checkout")
    expect_error(lambda: raw(b"\xff\xff\xff", timeout=10), SC.INVALID_ARGUMENT, "MALFORMED_REQUEST")
    missing_member = member_pb2.GetMemberRequest(member=common_pb2.MemberRef())
    expect_error(
        lambda: client.members.GetMember(missing_member, timeout=10),
        SC.INVALID_ARGUMENT,
        "MEMBER_REF_MISSING",
    )
