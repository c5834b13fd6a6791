"""`mms` without the real server: parsing, request building, output, error mapping.

Calls go to an in-process fake gRPC server that records each request and answers with a
canned response or a rich error status, so the whole client path runs for real.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import types
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

import engine
from engine import cli
from engine.config_file import dumps_config, load_config
from engine.proto import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    config_pb2,
    config_pb2_grpc,
    member_pb2,
    member_pb2_grpc,
    transaction_pb2,
    transaction_pb2_grpc,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "merchant.toml"
PHONE = "13800138000"
SV = common_pb2.STORED_VALUE
CASH = common_pb2.CASH


# --- a fake server --------------------------------------------------------------------


@dataclass
class Call:
    method: str
    request: Any
    metadata: dict[str, str]
    time_remaining_s: float | None


@dataclass
class Backend:
    """What the fake services answer, and what they were asked."""

    address: str = ""
    responses: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, tuple[grpc.StatusCode, str, str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def handle(self, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        metadata = {item.key: item.value for item in context.invocation_metadata()}
        self.calls.append(Call(method, request, metadata, context.time_remaining()))
        if method in self.errors:
            code, message, reason = self.errors[method]
            if not reason:
                context.abort(code, message)
            info = any_pb2.Any()
            info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="mms.v1"))
            status = status_pb2.Status(
                code=code.value[0], message=message, details=[info]
            )
            context.abort_with_status(rpc_status.to_status(status))
        return self.responses[method]


class FakeConfig(config_pb2_grpc.ConfigServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def ApplyConfig(self, request: Any, context: Any) -> Any:
        return self.backend.handle("ApplyConfig", request, context)

    def GetConfig(self, request: Any, context: Any) -> Any:
        return self.backend.handle("GetConfig", request, context)


class FakeMember(member_pb2_grpc.MemberServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def RegisterMember(self, request: Any, context: Any) -> Any:
        return self.backend.handle("RegisterMember", request, context)

    def GetMember(self, request: Any, context: Any) -> Any:
        return self.backend.handle("GetMember", request, context)


class FakeTransaction(transaction_pb2_grpc.TransactionServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def Recharge(self, request: Any, context: Any) -> Any:
        return self.backend.handle("Recharge", request, context)

    def Checkout(self, request: Any, context: Any) -> Any:
        return self.backend.handle("Checkout", request, context)


class FakeAdmin(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def Backup(self, request: Any, context: Any) -> Any:
        return self.backend.handle("Backup", request, context)


@pytest.fixture
def backend() -> Iterator[Backend]:
    state = Backend()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    config_pb2_grpc.add_ConfigServiceServicer_to_server(FakeConfig(state), server)
    member_pb2_grpc.add_MemberServiceServicer_to_server(FakeMember(state), server)
    transaction_pb2_grpc.add_TransactionServiceServicer_to_server(
        FakeTransaction(state), server
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(FakeAdmin(state), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    state.address = f"127.0.0.1:{port}"
    try:
        yield state
    finally:
        server.stop(None)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_against(
    backend: Backend, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    return run(capsys, *argv, "--server", backend.address)


def member(member_id: int = 7) -> member_pb2.Member:
    return member_pb2.Member(
        member_id=member_id,
        phone=PHONE,
        name="张三",
        card_no="C0001",
        level_code="silver",
        store_code="S001",
        registered_at_ms=1_700_000_000_000,
        cumulative_spend_fen=123_456,
        cumulative_recharge_fen=50_000,
    )


def balances(principal_fen: int, bonus_fen: int, points: int) -> common_pb2.Balances:
    return common_pb2.Balances(
        principal_fen=principal_fen, bonus_fen=bonus_fen, points=points
    )


CHECKOUT_RESPONSE = transaction_pb2.CheckoutResponse(
    member_id=7,
    list_amount_fen=5850,
    discount_bp=1000,
    discount_fen=585,
    amount_due_fen=5265,
    points_redeemed=200,
    points_value_fen=200,
    payments=[
        transaction_pb2.Payment(
            method=SV, amount_fen=3000, principal_fen=2500, bonus_fen=500
        ),
        transaction_pb2.Payment(
            method=CASH, amount_fen=2065, cash_received_fen=5000, change_fen=2935
        ),
    ],
    points_earned=50,
    balances=balances(0, 0, 1850),
    level_before="silver",
    level_after="gold",
    level_upgraded=True,
    ledger_seq=42,
    at_ms=1_700_000_000_000,
    store_code="S002",
)


# --- help and usage -------------------------------------------------------------------

COMMAND_PATHS = [
    [],
    ["serve"],
    ["config"],
    ["config", "apply"],
    ["config", "show"],
    ["member"],
    ["member", "register"],
    ["member", "show"],
    ["recharge"],
    ["checkout"],
    ["db"],
    ["db", "backup"],
    ["db", "audit"],
]


@pytest.mark.parametrize(
    "path", COMMAND_PATHS, ids=lambda path: " ".join(path) or "mms"
)
def test_help(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *path, "--help")
    assert code == 0, err
    assert out.startswith("usage: mms")
    assert err == ""


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "--help")
    for command in ("serve", "config", "member", "recharge", "checkout", "db"):
        assert f"    {command} " in out
    assert "exit codes" in out


def test_mutating_commands_take_a_request_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for path in (
        ["config", "apply"],
        ["member", "register"],
        ["recharge"],
        ["checkout"],
    ):
        _, out, _ = run(capsys, *path, "--help")
        assert "--request-id R" in out, path
    for path in (["config", "show"], ["member", "show"], ["db", "backup"]):
        _, out, _ = run(capsys, *path, "--help")
        assert "--request-id" not in out, path


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["config"],
        ["frobnicate"],
        ["member", "show"],  # a member selector is required
        ["member", "show", "--phone", PHONE, "--card", "C1"],  # only one
        ["member", "register", "--phone", PHONE],  # --name missing
        ["recharge", "--phone", PHONE],  # --amount missing
        ["recharge", "--phone", PHONE, "--amount", "1", "--method", "cheque"],
        ["checkout", "--amount", "1", "--pay", "credit"],
        ["checkout", "--amount", "1", "--id", "0"],
        ["checkout", "--amount", "1", "--id", "x"],
        ["checkout", "--amount", "1", "--id", "-3"],
        ["checkout", "--amount", "1", "--phone", PHONE, "--points", "1.5"],
        ["checkout", "--amount", "1", "--phone", ""],
        ["checkout", "--amount", "1", "--timeout", "0"],
        ["checkout", "--amount", "1", "--timeout", "soon"],
        ["checkout", "--amount", "1", "--request-id", " "],
        ["serve", "--metrics-port", "70000"],
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert "error:" in err


BAD_AMOUNTS = [
    ("-5", "must not be negative"),
    ("-0.01", "must not be negative"),
    ("1.234", "has more than 2 decimals"),
    ("abc", "is not a plain decimal number"),
    ("1e3", "is not a plain decimal number"),
    ("", "is empty"),
    ("0", "must be more than zero"),
    ("0.00", "must be more than zero"),
    ("1,000", "is not a plain decimal number"),
    ("1" * 40, "is too long"),
]


@pytest.mark.parametrize(("amount", "message"), BAD_AMOUNTS)
@pytest.mark.parametrize(
    "argv",
    [
        ["recharge", "--phone", PHONE, "--amount"],
        ["checkout", "--phone", PHONE, "--amount"],
        ["checkout", "--amount", "10", "--pay", "cash", "--cash-received"],
    ],
    ids=["recharge", "checkout", "cash-received"],
)
def test_bad_amounts_are_refused_before_any_call(
    argv: list[str],
    amount: str,
    message: str,
    backend: Backend,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_against(backend, capsys, *argv, amount)
    assert code == 2
    assert out == ""
    assert message in err
    assert f"argument {argv[-1]}:" in err
    assert backend.calls == []


# --- requests -------------------------------------------------------------------------


def tenders(*argv: str) -> list[tuple[int, bool, int, str]]:
    request = cli.build_checkout_request(cli.parse_args(["checkout", *argv]))
    return [
        (t.method, t.take_rest, t.cash_received_fen, t.external_ref)
        for t in request.tenders
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--phone", PHONE], [(SV, True, 0, "")]),  # a member pays from the balance
        ([], [(CASH, True, 0, "")]),  # a walk-in pays cash
        (["--phone", PHONE, "--pay", "balance"], [(SV, True, 0, "")]),
        (["--phone", PHONE, "--pay", "cash"], [(CASH, True, 0, "")]),
        (["--pay", "cash", "--cash-received", "100"], [(CASH, True, 10000, "")]),
        (["--cash-received", "50.5"], [(CASH, True, 5050, "")]),
        (
            ["--card", "C0001", "--pay", "balance+cash"],
            [(SV, True, 0, ""), (CASH, True, 0, "")],
        ),
        (
            ["--id", "7", "--pay", "balance+cash", "--cash-received", "20"],
            [(SV, True, 0, ""), (CASH, True, 2000, "")],
        ),
        (["--pay", "bank_card"], [(common_pb2.BANK_CARD, True, 0, "")]),
        (
            ["--pay", "scan_pay", "--ref", "WX123"],
            [(common_pb2.SCAN_PAY, True, 0, "WX123")],
        ),
    ],
)
def test_checkout_tenders(
    argv: list[str], expected: list[tuple[int, bool, int, str]]
) -> None:
    assert tenders("--amount", "58.5", *argv) == expected


def test_checkout_request_fields() -> None:
    args = cli.parse_args(
        [
            "checkout",
            "--phone",
            PHONE,
            "--amount",
            "58.50",
            "--points",
            "200",
            "--store",
            "S002",
        ]
    )
    request = cli.build_checkout_request(args)
    assert request.list_amount_fen == 5850
    assert request.member == common_pb2.MemberRef(phone=PHONE)
    assert request.points_to_redeem == 200
    assert request.store_code == "S002"
    assert request.request_id == args.request_id
    assert len(request.request_id) == 32
    int(request.request_id, 16)


def test_walk_in_checkout_has_no_member() -> None:
    request = cli.build_checkout_request(
        cli.parse_args(["checkout", "--amount", "0.01"])
    )
    assert not request.HasField("member")
    assert request.list_amount_fen == 1
    assert request.points_to_redeem == 0
    assert request.store_code == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pay", "balance"], "--pay balance needs a member"),
        (["--pay", "balance+cash"], "--pay balance+cash needs a member"),
        (["--points", "100"], "--points needs a member"),
        (
            ["--phone", PHONE, "--cash-received", "100"],
            "--cash-received needs cash in --pay",
        ),
        (["--pay", "bank_card", "--cash-received", "1"], "--cash-received needs cash"),
        (["--ref", "X1"], "--ref is for --pay bank_card or scan_pay"),
    ],
)
def test_checkout_option_clashes(
    argv: list[str], message: str, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(cli.UsageError, match=re.escape(message)):
        cli.build_checkout_request(cli.parse_args(["checkout", "--amount", "5", *argv]))
    code, out, err = run_against(backend, capsys, "checkout", "--amount", "5", *argv)
    assert code == 2
    assert out == ""
    assert f"mms checkout: error: {message}" in err
    assert err.startswith("usage: mms checkout")
    assert backend.calls == []


@pytest.mark.parametrize(
    ("argv", "ref"),
    [
        (["--phone", PHONE], common_pb2.MemberRef(phone=PHONE)),
        (["--card", "C0001"], common_pb2.MemberRef(card_no="C0001")),
        (["--id", "18446744073709551615"], common_pb2.MemberRef(member_id=2**64 - 1)),
        (["--id", " 42 "], common_pb2.MemberRef(member_id=42)),
    ],
)
def test_member_selector(argv: list[str], ref: common_pb2.MemberRef) -> None:
    args = cli.parse_args(["member", "show", *argv])
    assert cli.member_ref(args) == ref
    recharge = cli.build_recharge_request(
        cli.parse_args(["recharge", "--amount", "1", *argv])
    )
    assert recharge.member == ref


def test_member_id_above_uint64_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "member", "show", "--id", str(2**64))
    assert code == 2
    assert "out of range" in err


def test_recharge_request() -> None:
    args = cli.parse_args(
        [
            "recharge", "--card", "C0001", "--amount", "100", "--method", "scan_pay",
            "--ref", "ALI-9", "--store", "S003", "--request-id", "r-1",
        ]
    )  # fmt: skip
    assert cli.build_recharge_request(args) == transaction_pb2.RechargeRequest(
        request_id="r-1",
        member=common_pb2.MemberRef(card_no="C0001"),
        amount_fen=10000,
        method=common_pb2.SCAN_PAY,
        store_code="S003",
        external_ref="ALI-9",
    )


def test_recharge_defaults_to_cash() -> None:
    request = cli.build_recharge_request(
        cli.parse_args(["recharge", "--id", "1", "--amount", "5"])
    )
    assert request.method == CASH
    assert request.external_ref == ""


def test_register_request() -> None:
    args = cli.parse_args(
        ["member", "register", "--phone", PHONE, "--name", "张三", "--card", "C0001"]
    )
    assert cli.build_register_request(args) == member_pb2.RegisterMemberRequest(
        request_id=args.request_id, phone=PHONE, name="张三", card_no="C0001"
    )


def test_request_ids_are_fresh_unless_given() -> None:
    first = cli.parse_args(["checkout", "--amount", "1"]).request_id
    second = cli.parse_args(["checkout", "--amount", "1"]).request_id
    assert first != second
    given = cli.parse_args(["checkout", "--amount", "1", "--request-id", "till-3-0001"])
    assert given.request_id == "till-3-0001"
    assert cli.parse_args(["member", "show", "--id", "1"]).request_id is None


def test_client_options_before_or_after_the_command() -> None:
    before = cli.parse_args(
        [
            "--server",
            "h:1",
            "--merchant",
            "m1",
            "--json",
            "--timeout",
            "2.5",
            "db",
            "backup",
            "d",
        ]
    )
    after = cli.parse_args(
        [
            "db",
            "backup",
            "d",
            "--server",
            "h:1",
            "--merchant",
            "m1",
            "--json",
            "--timeout",
            "2.5",
        ]
    )
    for args in (before, after):
        assert (args.server, args.merchant, args.json, args.timeout) == (
            "h:1",
            "m1",
            True,
            2.5,
        )
    plain = cli.parse_args(["member", "show", "--id", "1"])
    assert (plain.server, plain.merchant, plain.json) == (
        "127.0.0.1:50051",
        "default",
        False,
    )
    assert plain.timeout is None and plain.default_timeout_s == cli.CALL_TIMEOUT_S


def test_server_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMS_SERVER", "pos-server:6000")
    assert cli.parse_args(["member", "show", "--id", "1"]).server == "pos-server:6000"
    args = cli.parse_args(["member", "show", "--id", "1", "--server", "other:1"])
    assert args.server == "other:1"


# --- JSON conversion ------------------------------------------------------------------


def test_message_to_json_doubles_money_fields() -> None:
    data = cli.message_to_json(CHECKOUT_RESPONSE)
    assert data["amount_due_fen"] == 5265 and data["amount_due"] == "52.65"
    assert data["list_amount_fen"] == 5850 and data["list_amount"] == "58.50"
    assert data["discount_bp"] == 1000
    assert data["payments"][0] == {
        "method": "STORED_VALUE",
        "amount_fen": 3000,
        "amount": "30.00",
        "cash_received_fen": 0,
        "cash_received": "0.00",
        "change_fen": 0,
        "change": "0.00",
        "external_ref": "",
        "principal_fen": 2500,
        "principal": "25.00",
        "bonus_fen": 500,
        "bonus": "5.00",
    }
    assert data["payments"][1]["change"] == "29.35"
    assert data["balances"] == {
        "principal_fen": 0,
        "principal": "0.00",
        "bonus_fen": 0,
        "bonus": "0.00",
        "points": 1850,
    }
    assert data["level_upgraded"] is True
    json.dumps(data)


def test_message_to_json_presence() -> None:
    walk_in = cli.message_to_json(transaction_pb2.CheckoutResponse(amount_due_fen=1))
    assert walk_in["balances"] is None
    assert walk_in["payments"] == []
    assert walk_in["member_id"] == 0
    assert cli.message_to_json(common_pb2.MemberRef(card_no="C1")) == {"card_no": "C1"}
    assert cli.message_to_json(member_pb2.GetMemberRequest()) == {"member": None}


def test_message_to_json_keeps_big_integers_exact() -> None:
    data = cli.message_to_json(
        common_pb2.Balances(principal_fen=2**63 - 1, points=-(2**63))
    )
    assert data["principal_fen"] == 2**63 - 1
    assert data["principal"] == "92233720368547758.07"
    assert json.loads(json.dumps(data))["points"] == -(2**63)


# --- against the fake server ----------------------------------------------------------


def test_checkout_json(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    backend.responses["Checkout"] = CHECKOUT_RESPONSE
    code, out, err = run_against(
        backend, capsys,
        "checkout", "--phone", PHONE, "--amount", "58.50", "--pay", "balance+cash",
        "--cash-received", "50", "--points", "200", "--merchant", "chain-1",
        "--request-id", "req-1", "--json",
    )  # fmt: skip
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["request_id"] == "req-1"
    assert data["amount_due_fen"] == 5265
    assert data["amount_due"] == "52.65"
    assert data["points_value_fen"] == 200
    assert [p["amount_fen"] for p in data["payments"]] == [3000, 2065]
    (call,) = backend.calls
    assert call.method == "Checkout"
    assert call.metadata["mms-merchant"] == "chain-1"
    assert (
        call.time_remaining_s is not None
        and 0 < call.time_remaining_s <= cli.CALL_TIMEOUT_S
    )
    assert call.request.request_id == "req-1"
    assert [t.method for t in call.request.tenders] == [SV, CASH]
    assert call.request.tenders[1].cash_received_fen == 5000


def test_checkout_text(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    backend.responses["Checkout"] = CHECKOUT_RESPONSE
    code, out, _ = run_against(
        backend, capsys, "checkout", "--id", "7", "--amount", "58.5"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Checkout 消费"
    expected = [
        ("List price 原价", "58.50"),
        ("Discount 折扣", "5.85 (10%)"),
        ("Amount due 应付", "52.65"),
        ("Points used 积分抵现", "200 = 2.00"),
        (
            "Paid 支付 stored value 储值",
            "30.00 (principal 本金 25.00, bonus 赠送金 5.00)",
        ),
        ("Paid 支付 cash 现金", "20.65 (received 实收 50.00, change 找零 29.35)"),
        ("Points earned 获得积分", "50"),
        ("Balance 余额", "0.00 (principal 本金 0.00 + bonus 赠送金 0.00)"),
        ("Points 积分", "1850"),
        ("Level 等级", "silver → gold  ▲ upgraded 升级"),
        ("Ledger seq 流水号", "42"),
        ("Store 门店", "S002"),
    ]
    for label, value in expected:
        assert any(
            line.split(label, 1)[-1].strip() == value for line in lines if label in line
        ), (
            label,
            out,
        )
    # values line up in one column, CJK labels counted two columns a character
    rows = [re.fullmatch(r"  (.+?)  +(\S.*)", line) for line in lines[1:]]
    columns = {cli._display_width(row.string[: row.start(2)]) for row in rows if row}
    assert len(columns) == 1 and len(rows) == len(lines) - 1, out


def test_walk_in_checkout_text(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    backend.responses["Checkout"] = transaction_pb2.CheckoutResponse(
        list_amount_fen=3720,
        amount_due_fen=3720,
        payments=[
            transaction_pb2.Payment(
                method=CASH, amount_fen=3720, cash_received_fen=5000, change_fen=1280
            )
        ],
        ledger_seq=3,
        store_code="S001",
    )
    code, out, _ = run_against(
        backend, capsys, "checkout", "--amount", "37.2", "--cash-received", "50"
    )
    assert code == 0
    assert "walk-in 散客" in out
    assert "change 找零 12.80" in out
    assert "Balance" not in out and "Points earned" not in out


def test_recharge(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    backend.responses["Recharge"] = transaction_pb2.RechargeResponse(
        member_id=7,
        amount_fen=10000,
        bonus_fen=1000,
        balances=balances(10000, 1000, 0),
        level_before="regular",
        level_after="regular",
        ledger_seq=1,
        store_code="S001",
    )
    code, out, _ = run_against(
        backend, capsys, "recharge", "--phone", PHONE, "--amount", "100"
    )
    assert code == 0
    assert "100.00 (cash 现金)" in out
    assert "Bonus 赠送" in out and "10.00" in out
    assert "110.00 (principal 本金 100.00 + bonus 赠送金 10.00)" in out
    assert "upgraded" not in out
    code, out, _ = run_against(
        backend, capsys, "recharge", "--phone", PHONE, "--amount", "100", "--json"
    )
    data = json.loads(out)
    assert data["balances"]["principal"] == "100.00"
    assert data["bonus_fen"] == 1000
    assert len(data["request_id"]) == 32
    assert backend.calls[0].request.amount_fen == 10000
    assert backend.calls[0].request.request_id != backend.calls[1].request.request_id


def test_member_register_and_show(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    backend.responses["RegisterMember"] = member_pb2.RegisterMemberResponse(
        member=member(), balances=balances(0, 0, 0)
    )
    backend.responses["GetMember"] = member_pb2.GetMemberResponse(
        member=member(), balances=balances(4150, 1000, 58), level_name="银卡 Silver"
    )
    code, out, _ = run_against(
        backend, capsys, "member", "register", "--phone", PHONE, "--name", "张三"
    )
    assert code == 0
    assert out.startswith("Member registered 会员注册成功")
    assert "#7 张三" in out
    code, out, _ = run_against(backend, capsys, "member", "show", "--card", "C0001")
    assert code == 0
    assert "silver 银卡 Silver" in out
    assert "51.50 (principal 本金 41.50 + bonus 赠送金 10.00)" in out
    assert "1234.56" in out  # cumulative spend
    assert backend.calls[1].request.member == common_pb2.MemberRef(card_no="C0001")
    code, out, _ = run_against(backend, capsys, "member", "show", "--id", "7", "--json")
    data = json.loads(out)
    assert data["member"]["cumulative_spend_fen"] == 123_456
    assert data["member"]["cumulative_spend"] == "1234.56"
    assert data["level_name"] == "银卡 Silver"
    assert "request_id" not in data


def test_config_apply_sends_the_file(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = load_config(EXAMPLE)
    stored.version = 1
    stored.applied_at_ms = 1_700_000_000_000
    backend.responses["ApplyConfig"] = config_pb2.ApplyConfigResponse(config=stored)
    code, out, err = run_against(backend, capsys, "config", "apply", str(EXAMPLE))
    assert (code, err) == (0, "")
    assert backend.calls[0].request.config == load_config(EXAMPLE)
    assert "Config applied" in out
    assert "钻石 Diamond" in out and "15%" in out
    code, out, _ = run_against(
        backend, capsys, "config", "apply", str(EXAMPLE), "--json"
    )
    data = json.loads(out)
    assert data["config"]["version"] == 1
    assert data["config"]["spend_order"] == "PRINCIPAL_FIRST"
    assert data["config"]["recharge_bonus_rules"][0]["bonus"] == "10.00"


def test_config_apply_refuses_a_bad_file(
    tmp_path: Path, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[levels]]\ncode = "a"\nname = "A"\ndiscount = 0.1\n')
    code, out, err = run_against(backend, capsys, "config", "apply", str(bad))
    assert code == 2
    assert out == ""
    assert "levels[0].discount: is a TOML float" in err
    assert "levels[0].points_per_yuan: is required" in err
    code, _, err = run_against(
        backend, capsys, "config", "apply", str(tmp_path / "none.toml")
    )
    assert code == 2
    assert "cannot read" in err
    assert backend.calls == []


def test_config_show(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(EXAMPLE)
    config.version = 3
    backend.responses["GetConfig"] = config_pb2.GetConfigResponse(config=config)
    code, out, _ = run_against(backend, capsys, "config", "show", "--toml")
    assert code == 0
    assert out == dumps_config(config)
    code, out, _ = run_against(backend, capsys, "config", "show")
    assert code == 0
    assert "Config 配置 version 3" in out
    assert "100 points = ¥1, at most 50% of the amount due" in out
    code, out, err = run_against(backend, capsys, "config", "show", "--toml", "--json")
    assert code == 2
    assert "choose one of --toml and --json" in err


def test_db_backup(backend: Backend, capsys: pytest.CaptureFixture[str]) -> None:
    backend.responses["Backup"] = admin_pb2.BackupResponse(
        path="/srv/backup/data.mdb", size_bytes=3 * 1024 * 1024 + 1
    )
    code, out, _ = run_against(backend, capsys, "db", "backup", "relative/dir")
    assert code == 0
    assert "/srv/backup/data.mdb" in out
    assert "3145729 bytes (3.0 MiB)" in out
    (call,) = backend.calls
    assert call.request.destination_dir == os.path.abspath("relative/dir")
    assert (
        call.time_remaining_s is not None and call.time_remaining_s > cli.CALL_TIMEOUT_S
    )
    code, out, _ = run_against(backend, capsys, "db", "backup", "d", "--json")
    assert json.loads(out) == {"path": "/srv/backup/data.mdb", "size_bytes": 3145729}


# --- errors ---------------------------------------------------------------------------


def test_domain_error_with_reason(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    backend.errors["Checkout"] = (
        grpc.StatusCode.FAILED_PRECONDITION,
        "balance 10.00 is less than 52.65",
        "INSUFFICIENT_BALANCE",
    )
    code, out, err = run_against(
        backend, capsys, "checkout", "--id", "7", "--amount", "58.5"
    )
    assert code == 1
    assert out == ""
    assert (
        err
        == "error: FAILED_PRECONDITION INSUFFICIENT_BALANCE: balance 10.00 is less than 52.65\n"
    )


def test_error_without_details(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    backend.errors["GetMember"] = (
        grpc.StatusCode.NOT_FOUND,
        "no member 13800138000",
        "",
    )
    code, _, err = run_against(
        backend, capsys, "member", "show", "--phone", PHONE, "--json"
    )
    assert code == 1
    assert err == "error: NOT_FOUND: no member 13800138000\n"


def test_uncertain_outcome_suggests_a_retry(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    backend.errors["Recharge"] = (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "queue full",
        "QUEUE_FULL",
    )
    code, _, err = run_against(
        backend, capsys, "recharge", "--id", "1", "--amount", "5", "--request-id", "r-9"
    )
    assert code == 1
    assert err.startswith("error: RESOURCE_EXHAUSTED QUEUE_FULL: queue full\n")
    assert "retry with --request-id r-9" in err


def test_unreachable_server_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    code, out, err = run(
        capsys, "member", "show", "--id", "1", "--server", address, "--timeout", "5"
    )
    assert code == 3
    assert out == ""
    assert err.startswith("error: UNAVAILABLE: ")
    assert f"is the server running at {address}?" in err
    code, _, err = run(
        capsys, "checkout", "--amount", "1", "--server", address, "--request-id", "r-2"
    )
    assert code == 3
    assert "retry with --request-id r-2" in err


# --- commands that run locally --------------------------------------------------------


def fake_module(monkeypatch: pytest.MonkeyPatch, name: str, **functions: Any) -> None:
    module = types.ModuleType(f"engine.{name}")
    for function_name, function in functions.items():
        setattr(module, function_name, function)
    monkeypatch.setitem(sys.modules, f"engine.{name}", module)
    monkeypatch.setattr(engine, name, module, raising=False)


def test_serve_calls_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    received: dict[str, Any] = {}

    def serve(**kwargs: Any) -> int:
        received.update(kwargs)
        return 0

    fake_module(monkeypatch, "server", serve=serve)
    assert cli.main(["serve"]) == 0
    assert received == {
        "data_dir": "./data",
        "listen": "127.0.0.1:50051",
        "metrics_port": 9464,
        "default_merchant": "default",
        "durable": True,
    }
    argv = ["serve", "--data", "/d", "--listen", "0.0.0.0:7", "--metrics-port", "0"]
    assert cli.main([*argv, "--merchant", "m2", "--no-sync"]) == 0
    assert received == {
        "data_dir": "/d",
        "listen": "0.0.0.0:7",
        "metrics_port": 0,
        "default_merchant": "m2",
        "durable": False,
    }
    assert cli.main(["--merchant", "m3", "serve"]) == 0
    assert received["default_merchant"] == "m3"


def test_serve_returns_the_server_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_module(monkeypatch, "server", serve=lambda **kwargs: 4)
    assert cli.main(["serve"]) == 4


def test_db_audit_delegates(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[tuple[str, bool]] = []

    def main_audit(path: str, as_json: bool) -> int:
        received.append((path, as_json))
        return 1

    fake_module(monkeypatch, "audit", main_audit=main_audit)
    assert cli.main(["db", "audit", "/backups/x"]) == 1
    assert cli.main(["db", "audit", "/backups/y", "--json"]) == 1
    assert received == [("/backups/x", False), ("/backups/y", True)]
