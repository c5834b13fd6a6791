"""`mms` without a server: parsing, request building, JSON conversion, help and usage.

Nothing here makes a call. A usage error is run with `--server` at a loopback port
nobody listens on: a call there would exit 3, so exit 2 proves none was made. Every
command's output against the real server is in test_cli_e2e.py.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine import cli, cli_sales
from engine.proto import (
    card_pb2,
    catalog_pb2,
    common_pb2,
    coupon_pb2,
    member_pb2,
    records_pb2,
    transaction_pb2,
)
from engine.tls import ClientTls, ServerTls

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "merchant.toml"
PHONE = "13800138000"
SV = common_pb2.STORED_VALUE
CASH = common_pb2.CASH


@pytest.fixture
def nobody_listens(monkeypatch: pytest.MonkeyPatch) -> str:
    """A loopback address with nothing listening: a call to it exits 3, never 2 (a token
    is set: without one a command stops before calling)."""
    monkeypatch.setenv("MMS_TOKEN", "mms_" + "0" * 64)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


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
    ["member", "code"],
    ["member", "update"],
    ["member", "search"],
    ["member", "history"],
    ["member", "changes"],
    ["member", "follow-up"],
    ["member", "follow-up", "add"],
    ["member", "follow-up", "list"],
    ["member", "import"],
    ["card"],
    ["card", "issue"],
    ["card", "show"],
    ["card", "events"],
    *[["card", action] for action in cli._CARD_ACTIONS],
    ["card", "pin"],
    ["card", "replace"],
    ["card", "return"],
    ["card", "renew"],
    ["card", "annual-fee"],
    ["card", "limit"],
    ["package"],
    ["package", "buy"],
    ["package", "refund"],
    ["recharge"],
    ["checkout"],
    ["db"],
    ["db", "backup"],
    ["db", "audit"],
]


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda path: " ".join(path) or "mms")
def test_help(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *path, "--help")
    assert code == 0, err
    assert out.startswith("usage: mms")
    assert err == ""


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "--help")
    for command in ("serve", "config", "member", "card", "package", "recharge", "checkout", "db"):
        assert f"    {command} " in out
    assert "exit codes" in out


def test_mutating_commands_take_a_request_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for path in (
        ["config", "apply"],
        ["member", "register"],
        ["member", "update"],
        ["member", "follow-up", "add"],
        ["member", "import"],
        ["card", "issue"],
        *[["card", action] for action in cli._CARD_ACTIONS],
        ["card", "pin"],
        ["card", "replace"],
        ["card", "return"],
        ["card", "renew"],
        ["card", "annual-fee"],
        ["card", "limit"],
        ["package", "buy"],
        ["package", "refund"],
        ["recharge"],
        ["checkout"],
    ):
        _, out, _ = run(capsys, *path, "--help")
        assert "--request-id R" in out, path
    for path in (
        ["config", "show"],
        ["member", "show"],
        ["member", "code"],
        ["member", "search"],
        ["member", "history"],
        ["member", "changes"],
        ["member", "follow-up", "list"],
        ["card", "show"],
        ["card", "events"],
        ["db", "backup"],
    ):
        _, out, _ = run(capsys, *path, "--help")
        assert "--request-id" not in out, path


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["config"],
        ["frobnicate"],
        ["member", "show"],  # a member selector is required
        ["member", "code"],  # whose?
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
        ["member", "show", "--qr", ""],
        ["member", "update", "--phone", PHONE, "--attr", "skin"],  # not CODE=VALUE
        ["member", "update", "--phone", PHONE, "--attr", "=dry"],
        ["member", "update", "--phone", PHONE, "--gender", "f"],
        ["member", "update", "--phone", PHONE, "--birthday", "--05-20"],  # needs =
        ["member", "update", "--phone", PHONE, "--tags", "vip"],  # --staff missing
        ["member", "update", "--phone", PHONE, "--tags", "vip", "--staff", " "],
        ["member", "search"],  # one of --name and --phone-prefix
        ["member", "search", "--name", "王", "--phone-prefix", "138"],
        ["member", "search", "--name", "王", "--page-size", "0"],
        ["member", "history", "--phone", PHONE, "--page-size", "-1"],
        ["member", "follow-up", "add", "--phone", PHONE],  # --text missing
        ["member", "follow-up", "add", "--phone", PHONE, "--text", " ", "--staff", "S01"],
        ["member", "follow-up", "add", "--phone", PHONE, "--text", "回访"],  # --staff missing
        ["member", "import"],  # FILE missing
        ["card", "issue", "--phone", PHONE, "--type", "vip"],  # --number missing
        ["card", "issue", "--phone", PHONE, "--number", "N1"],  # --type missing
        ["card", "issue", "--number", "N1", "--type", "vip"],  # whose card?
        ["card", "issue", "--phone", PHONE, "--number", "N1", "--type", "vip", "--pay", "balance"],
        ["card", "issue", "--phone", PHONE, "--number", "N1", "--type", "vip", "--limit", "0"],
        ["card", "show"],  # CARD missing
        ["card", "loss"],
        ["card", "freeze", "C1", "C2"],
        ["card", "events", "C1", "--page-size", "x"],
        ["card", "return", "C1", "--refund", "balance"],  # only 退次 goes back to balance
        ["card", "limit"],  # CARD missing
        ["card", "limit", "C1", "--limit", "10", "--no-limit"],  # one or the other
        ["card", "limit", "C1", "--limit", "0"],  # no limit is --no-limit
        ["card", "issue", "--id", "1", "--number", "N1", "--type", "t", "--link", "family"],
        ["card", "renew", "C1", "--price", "10"],  # the card type sets the price
        ["card", "renew", "C1", "--pay", "balance"],  # a fee is not paid from stored value
        ["card", "annual-fee", "C1", "--pay", "points"],
        ["card", "annual-fee", "C1", "--ref", "X1"],  # --ref is for bank card or scan pay
        ["card", "replace", "C1"],  # --new-number missing
        ["package", "buy", "C1"],  # --package missing
        ["package", "buy", "C1", "--package", "cut10", "--pay", "points"],
        ["package", "refund", "C1", "--lot", "0", "--refund", "cash"],
        ["package", "refund", "C1", "--lot", "1"],  # --refund missing
        ["checkout", "--card", "C1", "--amount", "0", "--use", "haircut"],  # not ITEM=N
        ["checkout", "--card", "C1", "--amount", "0", "--use", "haircut=0"],
        ["checkout", "--card", "C1", "--amount", "0", "--use", "haircut=-1"],
        ["checkout", "--card", "C1", "--amount", "0", "--use", "=2"],
        ["checkout", "--card", "C1", "--amount", "0", "--use", f"haircut={2**31}"],
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], nobody_listens: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server = [] if argv[:1] == ["serve"] else ["--server", nobody_listens]
    code, out, err = run(capsys, *argv, *server)
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
        [
            "card",
            "issue",
            "--id",
            "1",
            "--number",
            "C2",
            "--type",
            "t",
            "--primary",
            "C1",
            "--limit",
        ],
    ],
    ids=["recharge", "checkout", "cash-received", "subsidiary-limit"],
)
def test_bad_amounts_are_refused_before_any_call(
    argv: list[str],
    amount: str,
    message: str,
    nobody_listens: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, *argv, amount, "--server", nobody_listens)
    assert code == 2  # a call would have exited 3
    assert out == ""
    assert message in err
    assert f"argument {argv[-1]}:" in err


# --- requests -------------------------------------------------------------------------


def tenders(*argv: str) -> list[tuple[int, bool, int, str]]:
    request = cli.build_checkout_request(cli.parse_args(["checkout", *argv]))
    return [(t.method, t.take_rest, t.cash_received_fen, t.external_ref) for t in request.tenders]


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
def test_checkout_tenders(argv: list[str], expected: list[tuple[int, bool, int, str]]) -> None:
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
    request = cli.build_checkout_request(cli.parse_args(["checkout", "--amount", "0.01"]))
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
    argv: list[str],
    message: str,
    nobody_listens: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(cli.UsageError, match=re.escape(message)):
        cli.build_checkout_request(cli.parse_args(["checkout", "--amount", "5", *argv]))
    code, out, err = run(capsys, "checkout", "--amount", "5", *argv, "--server", nobody_listens)
    assert code == 2  # a call would have exited 3
    assert out == ""
    assert f"mms checkout: error: {message}" in err
    assert err.startswith("usage: mms checkout")


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
    recharge = cli.build_recharge_request(cli.parse_args(["recharge", "--amount", "1", *argv]))
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
    request = cli.build_recharge_request(cli.parse_args(["recharge", "--id", "1", "--amount", "5"]))
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
    # The merchant is the token's; --merchant names one only for a system operator.
    assert (plain.server, plain.merchant, plain.json) == ("127.0.0.1:50051", "", False)
    assert plain.timeout is None and plain.default_timeout_s == cli.CALL_TIMEOUT_S


def test_server_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMS_SERVER", "pos-server:6000")
    assert cli.parse_args(["member", "show", "--id", "1"]).server == "pos-server:6000"
    args = cli.parse_args(["member", "show", "--id", "1", "--server", "other:1"])
    assert args.server == "other:1"


def test_deadlines() -> None:
    def deadline_s(*argv: str) -> float:
        return cli._session(cli.parse_args(list(argv))).timeout_s

    assert deadline_s("member", "show", "--id", "1") == cli.CALL_TIMEOUT_S == 10
    assert deadline_s("checkout", "--amount", "1") == cli.CALL_TIMEOUT_S
    assert deadline_s("db", "backup", "d") == cli.BACKUP_TIMEOUT_S == 600
    assert deadline_s("db", "backup", "d", "--timeout", "2.5") == 2.5
    assert deadline_s("--timeout", "30", "recharge", "--id", "1", "--amount", "1") == 30


def test_serve_options() -> None:
    plain = cli.parse_args(["serve"])
    assert (plain.data, plain.listen, plain.metrics_port, plain.no_sync) == (
        "./data",
        "127.0.0.1:50051",
        9464,
        False,
    )
    assert plain.clock_file is None
    assert cli.parse_args(["serve", "--clock-file", "/t/now"]).clock_file == "/t/now"
    args = cli.parse_args(
        [
            "serve", "--data", "/d", "--listen", "0.0.0.0:7", "--metrics-port", "0",
            "--no-sync",
        ]
    )  # fmt: skip
    assert (args.data, args.listen, args.metrics_port, args.no_sync) == (
        "/d",
        "0.0.0.0:7",
        0,
        True,
    )
    # The server takes no merchant: every call's comes from its token.
    with pytest.raises(SystemExit):
        cli.parse_args(["serve", "--merchant", "m2"])


def test_client_tls_options(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("MMS_TLS_CA", "MMS_TLS_CERT", "MMS_TLS_KEY"):
        monkeypatch.delenv(variable, raising=False)

    def tls(*argv: str) -> ClientTls | None:
        return cli._session(cli.parse_args(list(argv))).tls

    assert tls("member", "show", "--id", "1") is None
    assert tls("--tls", "member", "show", "--id", "1") == ClientTls()
    files = ("--tls-ca", "ca.pem", "--tls-cert", "c.pem", "--tls-key", "c.key")
    expected = ClientTls("ca.pem", "c.pem", "c.key", "localhost")
    assert tls(*files, "--tls-server-name", "localhost", "member", "show", "--id", "1") == expected
    assert tls("member", "show", "--id", "1", *files, "--tls-server-name", "localhost") == expected
    assert tls("member", "show", "--id", "1", "--tls-server-name", "n") == ClientTls(
        server_name="n"
    )
    monkeypatch.setenv("MMS_TLS_CA", "env-ca.pem")
    monkeypatch.setenv("MMS_TLS_CERT", "env-c.pem")
    monkeypatch.setenv("MMS_TLS_KEY", "env-c.key")
    assert tls("member", "show", "--id", "1") == ClientTls("env-ca.pem", "env-c.pem", "env-c.key")
    assert tls("member", "show", "--id", "1", "--tls-ca", "ca.pem").ca_file == "ca.pem"
    # The server's own files are apart from the client's (and from its $MMS_TLS_*).
    serve = cli.parse_args(["serve", "--tls-cert", "s.pem", "--tls-key", "s.key"])
    assert (serve.serve_tls_cert, serve.serve_tls_key, serve.serve_tls_client_ca) == (
        "s.pem",
        "s.key",
        None,
    )
    assert cli._server_tls(serve) == ServerTls("s.pem", "s.key")
    assert cli._server_tls(cli.parse_args(["serve"])) is None
    with pytest.raises(cli.UsageError, match="go together"):
        cli._server_tls(cli.parse_args(["serve", "--tls-cert", "s.pem"]))


def test_db_audit_options() -> None:
    args = cli.parse_args(["db", "audit", "/backups/x"])
    assert (args.dir, args.json) == ("/backups/x", False)
    assert cli.parse_args(["db", "audit", "/backups/y", "--json"]).json is True


# --- JSON conversion ------------------------------------------------------------------

CHECKOUT_RESPONSE = transaction_pb2.CheckoutResponse(
    member_id=7,
    list_amount_fen=5850,
    discount_bp=1000,
    discount_fen=585,
    amount_due_fen=5265,
    points_redeemed=200,
    points_value_fen=200,
    payments=[
        common_pb2.Payment(method=SV, amount_fen=3000, principal_fen=2500, bonus_fen=500),
        common_pb2.Payment(method=CASH, amount_fen=2065, cash_received_fen=5000, change_fen=2935),
    ],
    points_earned=50,
    balances=common_pb2.Balances(
        principal_fen=0,
        bonus_fen=0,
        points=1850,
        uses=[common_pb2.ItemUsesLeft(item_code="haircut", uses_left=7)],
    ),
    level_before="silver",
    level_after="gold",
    level_upgraded=True,
    ledger_seq=42,
    at_ms=1_700_000_000_000,
    store_code="S002",
)


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
        "member_id": 0,
        "card_no": "",
    }
    assert data["payments"][1]["change"] == "29.35"
    assert data["balances"] == {
        "principal_fen": 0,
        "principal": "0.00",
        "bonus_fen": 0,
        "bonus": "0.00",
        "points": 1850,
        "uses": [{"item_code": "haircut", "uses_left": 7}],
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
    data = cli.message_to_json(common_pb2.Balances(principal_fen=2**63 - 1, points=-(2**63)))
    assert data["principal_fen"] == 2**63 - 1
    assert data["principal"] == "92233720368547758.07"
    assert json.loads(json.dumps(data))["points"] == -(2**63)


# --- usage errors found after parsing, before any call --------------------------------


def test_config_apply_refuses_a_bad_file(
    tmp_path: Path, nobody_listens: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[levels]]\ncode = "a"\nname = "A"\ndiscount = 0.1\n')
    code, out, err = run(capsys, "config", "apply", str(bad), "--server", nobody_listens)
    assert code == 2  # a call would have exited 3
    assert out == ""
    assert "levels[0].discount: is a TOML float" in err
    assert "levels[0].points_per_yuan: is required" in err
    missing = str(tmp_path / "none.toml")
    code, _, err = run(capsys, "config", "apply", missing, "--server", nobody_listens)
    assert code == 2
    assert "cannot read" in err


def test_config_show_takes_one_format(
    nobody_listens: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "config", "show", "--toml", "--json", "--server", nobody_listens)
    assert code == 2  # a call would have exited 3
    assert out == ""
    assert "mms config show: error: choose one of --toml and --json" in err


# --- no server ------------------------------------------------------------------------


def test_unreachable_server_exits_3(
    nobody_listens: str, capsys: pytest.CaptureFixture[str]
) -> None:
    address = nobody_listens
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


# --- cards, packages and profiles: requests -------------------------------------------


def request_of(build, *argv: str):  # type: ignore[no-untyped-def]
    return build(cli.parse_args(list(argv)))


def test_issue_card_request() -> None:
    request = request_of(
        cli.build_issue_card_request,
        "card", "issue", "--phone", PHONE, "--number", "VIP0001", "--type", "vip",
        "--pay", "scan_pay", "--ref", "WX-7", "--activate", "--store", "S002",
        "--staff", "A01", "--request-id", "r-1",
    )  # fmt: skip
    assert request == card_pb2.IssueCardRequest(
        request_id="r-1",
        member=common_pb2.MemberRef(phone=PHONE),
        card_no="VIP0001",
        card_type="vip",
        store_code="S002",
        tenders=[
            common_pb2.Tender(method=common_pb2.SCAN_PAY, take_rest=True, external_ref="WX-7")
        ],
        activate=True,
        staff_code="A01",
    )
    assert request.pin == ""  # read by the command, never from argv (see read_pin)


def test_issue_subsidiary_card_request() -> None:
    request = request_of(
        cli.build_issue_card_request,
        "card", "issue", "--card", "C0001", "--number", "C0002", "--type", "member",
        "--primary", "C0001", "--limit", "500.5",
    )  # fmt: skip
    assert request.member == common_pb2.MemberRef(card_no="C0001")
    assert (request.primary_card_no, request.spending_limit_fen) == ("C0001", 50_050)
    assert list(request.tenders) == [common_pb2.Tender(method=CASH, take_rest=True)]
    assert not request.activate
    assert request.link_kind == card_pb2.LINK_KIND_UNSPECIFIED  # the server infers it
    assert request.primary_pin == ""  # read by the command (see read_primary_pin)


@pytest.mark.parametrize(
    ("link", "kind"),
    [("subsidiary", card_pb2.SUBSIDIARY), ("linked", card_pb2.LINKED), ("group", card_pb2.GROUP)],
)
def test_issue_attached_card_of_each_kind(link: str, kind: int) -> None:
    request = request_of(
        cli.build_issue_card_request,
        "card", "issue", "--phone", PHONE, "--number", "L0001", "--type", "member",
        "--primary", "G0001", "--link", link, "--primary-pin",
    )  # fmt: skip
    assert (request.primary_card_no, request.link_kind) == ("G0001", kind)
    assert (request.spending_limit_fen, request.primary_pin) == (0, "")


def test_read_primary_pin_before_the_new_cards_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("135790\n246802\n"))
    args = cli.parse_args(
        [
            "card", "issue", "--phone", PHONE, "--number", "L0001", "--type", "member",
            "--primary", "G0001", "--primary-pin-stdin", "--pin-stdin",
        ]
    )  # fmt: skip
    assert (cli.read_primary_pin(args), cli.read_pin(args)) == ("135790", "246802")
    monkeypatch.setenv("MMS_PRIMARY_PIN", "111111")
    plain = cli.parse_args(["card", "limit", "L1", "--limit", "5", "--primary-pin"])
    assert cli.read_primary_pin(plain) == "111111"
    assert cli.read_primary_pin(cli.parse_args(["card", "limit", "L1", "--limit", "5"])) == ""
    monkeypatch.delenv("MMS_PRIMARY_PIN")
    with pytest.raises(
        cli.UsageError, match=re.escape("give --primary-pin-stdin or $MMS_PRIMARY_PIN")
    ):
        cli.read_primary_pin(plain)


@pytest.mark.parametrize(
    ("argv", "limit_fen", "reset_spent"),
    [
        (["--limit", "80.5"], 8_050, False),
        (["--no-limit"], 0, False),
        (["--limit", "10", "--reset-spent"], 1_000, True),
        (["--reset-spent"], None, True),
    ],
)
def test_set_limit_request(argv: list[str], limit_fen: int | None, reset_spent: bool) -> None:
    request = request_of(
        cli.build_set_limit_request,
        "card", "limit", "L0001", *argv, "--note", "家长调整", "--staff", "M1", "--request-id", "r-9",
    )  # fmt: skip
    assert (request.request_id, request.card_no, request.reset_spent) == (
        "r-9",
        "L0001",
        reset_spent,
    )
    assert (request.note, request.staff_code, request.primary_pin) == ("家长调整", "M1", "")
    if limit_fen is None:
        assert not request.HasField("spending_limit_fen")  # the limit is kept
    else:
        assert request.HasField("spending_limit_fen") and request.spending_limit_fen == limit_fen


def test_set_limit_that_changes_nothing_is_a_usage_error(
    nobody_listens: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message = "nothing to change: give --limit, --no-limit or --reset-spent"
    with pytest.raises(cli.UsageError, match=re.escape(message)):
        request_of(cli.build_set_limit_request, "card", "limit", "L0001")
    code, out, err = run(capsys, "card", "limit", "L0001", "--server", nobody_listens)
    assert (code, out) == (2, "")  # a call would have exited 3
    assert f"mms card limit: error: {message}" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--limit", "50"], "--limit is for an attached card: give --primary"),
        (["--link", "linked"], "--link is for an attached card: give --primary"),
        (["--primary-pin"], "--primary-pin is for an attached card: give --primary"),
        (["--primary-pin-stdin"], "--primary-pin is for an attached card: give --primary"),
        (["--ref", "X1"], "--ref is for --pay bank_card or scan_pay"),
    ],
)
def test_issue_card_option_clashes(
    argv: list[str], message: str, nobody_listens: str, capsys: pytest.CaptureFixture[str]
) -> None:
    issue = ["card", "issue", "--id", "1", "--number", "N0001", "--type", "member", *argv]
    with pytest.raises(cli.UsageError, match=re.escape(message)):
        request_of(cli.build_issue_card_request, *issue)
    code, out, err = run(capsys, *issue, "--server", nobody_listens)
    assert (code, out) == (2, "")  # a call would have exited 3
    assert f"mms card issue: error: {message}" in err


@pytest.mark.parametrize(
    ("command", "action"),
    [
        ("activate", card_pb2.ACTIVATE),
        ("loss", card_pb2.REPORT_LOSS),
        ("unloss", card_pb2.CANCEL_LOSS),
        ("freeze", card_pb2.FREEZE),
        ("unfreeze", card_pb2.UNFREEZE),
        ("unlock", card_pb2.UNLOCK),
        ("expire", card_pb2.EXPIRE),
        ("default", card_pb2.SET_DEFAULT),
    ],
)
def test_card_action_requests(command: str, action: int) -> None:
    request = request_of(
        cli.build_card_action_request,
        "card", command, "C0001", "--note", "顾客来电 called in", "--staff", "M1",
        "--request-id", "r-2",
    )  # fmt: skip
    assert request == card_pb2.CardActionRequest(
        request_id="r-2", card_no="C0001", action=action, note="顾客来电 called in", staff_code="M1"
    )


def test_every_card_action_has_a_command() -> None:
    actions = {action for action, _help, _title in cli._CARD_ACTIONS.values()}
    assert actions == set(card_pb2.CardAction.values()) - {card_pb2.CARD_ACTION_UNSPECIFIED}


def test_replace_return_renew_requests() -> None:
    replace = request_of(
        cli.build_replace_card_request,
        "card", "replace", "C0001", "--new-number", "C0009", "--pay", "bank_card",
        "--ref", "POS-1", "--staff", "A01",
    )  # fmt: skip
    assert (replace.card_no, replace.new_card_no, replace.staff_code) == ("C0001", "C0009", "A01")
    bank = common_pb2.Tender(method=common_pb2.BANK_CARD, take_rest=True, external_ref="POS-1")
    assert list(replace.tenders) == [bank]
    returned = request_of(
        cli.build_return_card_request, "card", "return", "C0001", "--refund", "scan_pay", "--pin"
    )
    assert (returned.card_no, returned.refund_method) == ("C0001", common_pb2.SCAN_PAY)
    assert (returned.store_code, returned.pin) == ("", "")  # the PIN: see read_pin
    # an attached card holds nothing to refund: the method may be left out (the server
    # asks for it for a card of its own)
    detached = request_of(cli.build_return_card_request, "card", "return", "L0001")
    assert detached.refund_method == common_pb2.PAYMENT_METHOD_UNSPECIFIED
    renew = request_of(cli.build_renew_card_request, "card", "renew", "M0001", "--store", "S2")
    assert (renew.card_no, renew.store_code) == ("M0001", "S2")
    assert list(renew.tenders) == [common_pb2.Tender(method=CASH, take_rest=True)]


def test_annual_fee_requests() -> None:
    principal = request_of(cli.build_annual_fee_request, "card", "annual-fee", "V0001")
    assert (principal.card_no, principal.store_code, principal.staff_code) == ("V0001", "", "")
    balance = common_pb2.Tender(method=common_pb2.STORED_VALUE, take_rest=True)
    assert list(principal.tenders) == [balance]  # from principal unless told
    split = request_of(
        cli.build_annual_fee_request,
        "card", "annual-fee", "V0001", "--pay", "balance+cash", "--store", "S2", "--staff", "A01",
    )  # fmt: skip
    assert list(split.tenders) == [balance, common_pb2.Tender(method=CASH, take_rest=True)]
    assert (split.store_code, split.staff_code) == ("S2", "A01")
    scan = request_of(
        cli.build_annual_fee_request, "card", "annual-fee", "V0001", "--pay", "scan_pay",
        "--ref", "WX-7",
    )  # fmt: skip
    scan_tender = common_pb2.Tender(method=common_pb2.SCAN_PAY, take_rest=True, external_ref="WX-7")
    assert list(scan.tenders) == [scan_tender]


@pytest.mark.parametrize(
    ("pay", "methods"),
    [
        ("balance", [SV]),
        ("balance+cash", [SV, CASH]),
        ("cash", [CASH]),
        ("scan_pay", [common_pb2.SCAN_PAY]),
    ],
)
def test_buy_package_request(pay: str, methods: list[int]) -> None:
    request = request_of(
        cli.build_buy_package_request,
        "package", "buy", "C0001", "--package", "cut10", "--pay", pay, "--staff", "A01",
    )  # fmt: skip
    assert (request.card_no, request.package_code, request.staff_code) == ("C0001", "cut10", "A01")
    assert [tender.method for tender in request.tenders] == methods
    assert all(tender.take_rest for tender in request.tenders)
    assert request.pin == ""


def test_buy_package_defaults_to_the_balance() -> None:
    request = request_of(cli.build_buy_package_request, "package", "buy", "C1", "--package", "p")
    assert list(request.tenders) == [common_pb2.Tender(method=SV, take_rest=True)]
    with pytest.raises(cli.UsageError, match="--ref is for --pay bank_card or scan_pay"):
        request_of(
            cli.build_buy_package_request, "package", "buy", "C1", "--package", "p", "--ref", "X"
        )


@pytest.mark.parametrize(
    ("refund", "method"),
    [("balance", SV), ("cash", CASH), ("bank_card", common_pb2.BANK_CARD)],
)
def test_refund_package_request(refund: str, method: int) -> None:
    request = request_of(
        cli.build_refund_package_request,
        "package", "refund", "C0001", "--lot", "18446744073709551615", "--refund", refund,
    )  # fmt: skip
    assert (request.card_no, request.lot_id, request.refund_method) == ("C0001", 2**64 - 1, method)
    assert request.pin == ""  # --pin asks for it (see read_pin)


def test_checkout_with_count_card_uses() -> None:
    args = cli.parse_args(
        [
            "checkout", "--card", "K0001", "--amount", "0", "--use", "haircut=2",
            "--use", " wash = 1 ", "--staff", "T07",
        ]
    )  # fmt: skip
    request = cli.build_checkout_request(args)
    assert request.list_amount_fen == 0
    assert list(request.uses) == [
        transaction_pb2.CountUse(item_code="haircut", uses=2),
        transaction_pb2.CountUse(item_code="wash", uses=1),
    ]
    assert request.staff_code == "T07"
    assert list(request.tenders) == [common_pb2.Tender(method=SV, take_rest=True)]
    assert request.pin == ""
    with_amount = request_of(
        cli.build_checkout_request, "checkout", "--card", "K1", "--amount", "12.5", "--use", "a=1"
    )
    assert (with_amount.list_amount_fen, len(with_amount.uses)) == (1250, 1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--card", "K1", "--amount", "0"], "argument --amount: must be more than zero"),
        (["--amount", "0", "--use", "a=1"], "--use and --pin need the member's card"),
        (["--amount", "5", "--pin"], "--use and --pin need the member's card"),
        (
            ["--card", "K1", "--amount", "0", "--use", "a=1", "--use", "a=2"],
            "--use a is given twice",
        ),
    ],
)
def test_checkout_use_clashes(
    argv: list[str], message: str, nobody_listens: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(cli.UsageError, match=re.escape(message)):
        request_of(cli.build_checkout_request, "checkout", *argv)
    code, out, err = run(capsys, "checkout", *argv, "--server", nobody_listens)
    assert (code, out) == (2, "")  # a call would have exited 3
    assert f"mms checkout: error: {message}" in err


def test_register_request_with_a_profile() -> None:
    args = cli.parse_args(
        [
            "member", "register", "--phone", PHONE, "--name", "王五", "--gender", "male",
            "--birthday=--05-20", "--tags", "vip，新客, ,", "--attr", "skin=干性 dry",
            "--attr", "shoe_size= 42 ", "--referrer-phone", "13900139000", "--staff", "S01",
            "--card-type", "vip", "--request-id", "r-3",
        ]
    )  # fmt: skip
    assert cli.build_register_request(args) == member_pb2.RegisterMemberRequest(
        request_id="r-3",
        phone=PHONE,
        name="王五",
        profile=member_pb2.Profile(
            gender=member_pb2.MALE,
            birthday="--05-20",
            tags=["vip", "新客"],
            attributes={"skin": "干性 dry", "shoe_size": "42"},
        ),
        referrer=common_pb2.MemberRef(phone="13900139000"),
        staff_code="S01",
        card_type="vip",
    )


def test_update_sends_exactly_the_fields_given() -> None:
    def update(*argv: str) -> member_pb2.UpdateMemberRequest:
        return request_of(
            cli.build_update_member_request,
            "member",
            "update",
            "--id",
            "7",
            "--staff",
            "S01",
            *argv,
        )

    request = update("--birthday", "1990-05-20")
    assert list(request.fields) == ["birthday"]
    assert request.profile == member_pb2.Profile(birthday="1990-05-20")
    assert (request.member, request.staff_code) == (common_pb2.MemberRef(member_id=7), "S01")
    request = update("--name", "王小五", "--new-phone", "13900139000", "--tags", "")
    assert list(request.fields) == ["name", "phone", "tags"]
    assert (request.name, request.phone, list(request.profile.tags)) == (
        "王小五",
        "13900139000",
        [],
    )
    request = update(
        "--gender", "female", "--anniversary", "2015-10-01", "--address", "上海市 1 号",
        "--occupation", "教师", "--interests", "yoga,跑步", "--groups", "A组",
        "--attr", "skin=dry", "--attr", "note=",
    )  # fmt: skip
    assert list(request.fields) == [
        "gender", "anniversary", "address", "occupation", "interests", "groups", "attributes",
    ]  # fmt: skip
    assert request.profile == member_pb2.Profile(
        gender=member_pb2.FEMALE,
        anniversary="2015-10-01",
        address="上海市 1 号",
        occupation="教师",
        interests=["yoga", "跑步"],
        groups=["A组"],
        attributes={"skin": "dry", "note": ""},
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "nothing to change"),
        (["--attr", "skin=dry", "--attr", "skin=oily"], "--attr skin is given twice"),
    ],
)
def test_update_refusals(
    argv: list[str], message: str, nobody_listens: str, capsys: pytest.CaptureFixture[str]
) -> None:
    update = ["member", "update", "--phone", PHONE, "--staff", "S01", *argv]
    with pytest.raises(cli.UsageError, match=re.escape(message)):
        request_of(cli.build_update_member_request, *update)
    code, out, err = run(capsys, *update, "--server", nobody_listens)
    assert (code, out) == (2, "")
    assert f"mms member update: error: {message}" in err


def test_search_and_follow_up_requests() -> None:
    by_name = request_of(cli.build_search_request, "member", "search", "--name", "王")
    assert by_name == member_pb2.SearchMembersRequest(name_prefix="王")
    by_phone = request_of(
        cli.build_search_request,
        "member", "search", "--phone-prefix", "138", "--page-size", "50", "--page-token", "ab12",
    )  # fmt: skip
    assert by_phone == member_pb2.SearchMembersRequest(
        phone_prefix="138", page_size=50, page_token="ab12"
    )
    follow_up = request_of(
        cli.build_follow_up_request,
        "member", "follow-up", "add", "--qr", "MMS:C0001", "--text", "回访 满意", "--staff", "S01",
        "--request-id", "r-4",
    )  # fmt: skip
    assert follow_up == member_pb2.AddFollowUpRequest(
        request_id="r-4",
        member=common_pb2.MemberRef(qr="MMS:C0001"),
        staff_code="S01",
        text="回访 满意",
    )


def test_member_selector_takes_a_qr_code() -> None:
    args = cli.parse_args(["member", "show", "--qr", "MMS:C0001"])
    assert cli.member_ref(args) == common_pb2.MemberRef(qr="MMS:C0001")
    checkout = request_of(cli.build_checkout_request, "checkout", "--qr", "MMS:C1", "--amount", "1")
    assert checkout.member == common_pb2.MemberRef(qr="MMS:C1")


def test_message_to_json_shows_maps() -> None:
    member = member_pb2.Member(member_id=1, attributes={"skin": "dry", "a": "1"}, tags=["vip"])
    data = cli.message_to_json(member)
    assert data["attributes"] == {"a": "1", "skin": "dry"}
    assert data["tags"] == ["vip"]
    lot = card_pb2.CountLot(lot_id=3, price_fen=50_000, items=[card_pb2.ItemUses(item_code="x")])
    assert cli.message_to_json(lot)["price"] == "500.00"
    json.dumps(data)


# --- PINs: never from argv --------------------------------------------------------------


def _all_parsers(parser: object) -> list[object]:
    found = [parser]
    for action in parser._actions:  # type: ignore[attr-defined]
        for child in getattr(action, "choices", None) or {}:
            if isinstance(action.choices, dict):
                found += _all_parsers(action.choices[child])
    return found


def test_no_option_takes_a_pin_as_its_value() -> None:
    """A PIN typed on the command line lands in shell history and in `ps`."""
    checked = 0
    for parser in _all_parsers(cli.build_parser()):
        for action in parser._actions:  # type: ignore[attr-defined]
            if "pin" in action.dest:
                assert action.nargs == 0, (parser.prog, action.dest)  # type: ignore[attr-defined]
                checked += 1
    # issue: 4 (its PIN and the primary's); card limit, card return, package buy and refund,
    # checkout: 2 each; card pin: 2
    assert checked >= 16


@pytest.mark.parametrize(
    "argv",
    [
        ["checkout", "--card", "C1", "--amount", "1", "--pin", "123456"],
        ["checkout", "--card", "C1", "--amount", "1", "--pin=123456"],
        ["card", "issue", "--id", "1", "--number", "N1", "--type", "t", "--pin", "123456"],
        ["package", "buy", "C1", "--package", "p", "--pin", "123456"],
        ["package", "refund", "C1", "--lot", "1", "--refund", "cash", "--pin", "123456"],
        ["card", "return", "C1", "--refund", "cash", "--pin", "123456"],
        ["card", "limit", "C1", "--limit", "5", "--primary-pin", "123456"],
        ["card", "issue", "--id", "1", "--number", "N1", "--type", "t", "--primary-pin=123456"],
        ["card", "pin", "C1", "--old-pin", "111111", "--new-pin", "123456"],
        ["card", "pin", "C1", "123456"],
    ],
)
def test_a_pin_on_the_command_line_is_refused(
    argv: list[str], nobody_listens: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *argv, "--server", nobody_listens)
    assert (code, out) == (2, "")  # refused before any call, and before reading any PIN
    assert "error:" in err


def test_read_pin_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMS_PIN", "123456")
    args = cli.parse_args(["checkout", "--card", "C1", "--amount", "1"])
    assert cli.read_pin(args) == ""


def test_read_pin_from_a_line_of_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMS_PIN", "999999")  # --pin-stdin wins over the environment
    monkeypatch.setattr(sys, "stdin", io.StringIO("135790\r\nrest\n"))
    args = cli.parse_args(["checkout", "--card", "C1", "--amount", "1", "--pin-stdin"])
    assert cli.read_pin(args) == "135790"
    assert sys.stdin.read() == "rest\n"  # one line taken, no more


def test_read_pin_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal
    monkeypatch.setenv("MMS_PIN", "246802")
    args = cli.parse_args(["package", "buy", "C1", "--package", "p", "--pin"])
    assert cli.read_pin(args) == "246802"
    monkeypatch.delenv("MMS_PIN")
    with pytest.raises(cli.UsageError, match=re.escape("give --pin-stdin or $MMS_PIN")):
        cli.read_pin(args)


@pytest.mark.parametrize(
    ("stdin", "message"),
    [("", "stdin ended before its line"), ("1" * 65 + "\n", "the line on stdin is too long")],
)
def test_read_pin_refuses_a_bad_stdin(
    stdin: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    args = cli.parse_args(["checkout", "--card", "C1", "--amount", "1", "--pin-stdin"])
    with pytest.raises(cli.UsageError, match=re.escape(message)):
        cli.read_pin(args)


def test_read_pin_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("111111\n222222\n"))
    both = cli.parse_args(["card", "pin", "C1", "--old-pin-stdin", "--new-pin-stdin"])
    assert cli.read_pin_change(both) == ("111111", "222222")  # the current PIN's line first
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    monkeypatch.setenv("MMS_NEW_PIN", "333333")
    first = cli.parse_args(["card", "pin", "C1", "--old-pin-stdin"])
    assert cli.read_pin_change(first) == ("", "333333")  # an empty line: no PIN yet
    monkeypatch.setenv("MMS_OLD_PIN", "333333")
    monkeypatch.setenv("MMS_NEW_PIN", "444444")
    plain = cli.parse_args(["card", "pin", "C1", "--request-id", "r-5", "--staff", "A01"])
    old_pin, new_pin = cli.read_pin_change(plain)
    request = cli.build_change_pin_request(plain, old_pin=old_pin, new_pin=new_pin)
    assert request == card_pb2.ChangePinRequest(
        request_id="r-5", card_no="C1", old_pin="333333", new_pin="444444", staff_code="A01"
    )
    monkeypatch.delenv("MMS_OLD_PIN")
    with pytest.raises(cli.UsageError, match=re.escape("give --old-pin-stdin or $MMS_OLD_PIN")):
        cli.read_pin_change(plain)


def test_a_missing_pin_is_a_usage_error_before_any_call(
    nobody_listens: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MMS_NEW_PIN", raising=False)
    monkeypatch.delenv("MMS_OLD_PIN", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, err = run(capsys, "card", "pin", "C1", "--server", nobody_listens)
    assert (code, out) == (2, "")  # a call would have exited 3
    assert "mms card pin: error: current PIN 原密码" in err


# The real command on a pseudo-terminal: getpass reads the typed PINs without echo.
TERMINAL_TIMEOUT_S = 30


def _in_terminal(argv: list[str], typed: list[str]) -> tuple[int, str]:
    """Runs `python -m engine ARGV` on a new pseudo-terminal, typing each of `typed` after
    the prompt before it; returns the exit code and everything the terminal showed."""
    pid, master = pty.fork()
    if pid == 0:  # the child: the terminal is its controlling terminal and stdin
        os.chdir(Path(__file__).resolve().parent.parent)
        os.execv(sys.executable, [sys.executable, "-m", "engine", *argv])
    shown = b""
    answered = 0  # how much of `shown` the last line typed answered
    deadline = time.monotonic() + TERMINAL_TIMEOUT_S
    pending = list(typed)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            if pending and shown[answered:].rstrip().endswith(b":"):
                os.write(master, pending.pop(0).encode() + b"\n")
                answered = len(shown)
    finally:
        os.close(master)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode("utf-8", "replace")


def test_pins_are_typed_without_echo_on_a_terminal(nobody_listens: str) -> None:
    code, shown = _in_terminal(
        ["card", "pin", "C1", "--server", nobody_listens, "--request-id", "r-6", "--timeout", "5"],
        ["864209", "531975", "531975"],
    )
    assert "current PIN 原密码 (none: empty):" in shown
    assert "new PIN 新密码:" in shown and "new PIN 新密码 again 再输一次:" in shown
    for pin in ("864209", "531975"):
        assert pin not in shown  # not echoed
    assert code == 3, shown  # the PINs were read and the call was made
    assert "retry with --request-id r-6" in shown


def test_a_new_pin_typed_differently_twice_is_refused(nobody_listens: str) -> None:
    code, shown = _in_terminal(
        ["card", "issue", "--id", "1", "--number", "N0001", "--type", "vip", "--pin",
         "--server", nobody_listens],
        ["135790", "135791"],
    )  # fmt: skip
    assert code == 2, shown
    assert "PIN 密码: the two typed differ" in shown


# --- member import: what is refused before any call -----------------------------------


def test_import_ids_come_from_the_file_unless_given() -> None:
    args = cli.parse_args(["member", "import", "members.csv"])
    assert (args.mutating, args.request_id, args.errors) == (True, None, None)
    given = cli.parse_args(["member", "import", "m.xlsx", "--request-id", "imp-1", "--errors", "e"])
    assert (given.request_id, given.errors) == ("imp-1", "e")


def test_an_unreadable_import_file_is_refused_before_any_call(
    tmp_path: Path, nobody_listens: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.csv"
    code, out, err = run(capsys, "member", "import", str(missing), "--server", nobody_listens)
    assert (code, out) == (2, "")  # a call would have exited 3
    assert err.startswith(f"error: cannot read {missing}")
    headless = tmp_path / "headless.csv"
    headless.write_text("13800138000,张三\n", encoding="utf-8")
    code, out, err = run(capsys, "member", "import", str(headless), "--server", nobody_listens)
    assert (code, out) == (2, "")
    assert err.startswith("error: unknown column(s) 13800138000")
    rows = tmp_path / "rows.csv"
    rows.write_text("phone,name\n13800138000,张三\n", encoding="utf-8")
    nowhere = tmp_path / "no-dir" / "errors.csv"
    argv = ["member", "import", str(rows), "--errors", str(nowhere), "--server", nobody_listens]
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert f"mms member import: error: --errors: cannot write {nowhere}" in err


# --- itemized sales: engine/cli_sales.py ----------------------------------------------

SALES_PATHS = [
    ["item"],
    ["item", "add"],
    ["item", "show"],
    ["item", "list"],
    ["item", "import"],
    ["stock"],
    *[["stock", move] for move in ("in", "out", "count", "transfer")],
    ["bill"],
    ["bill", "suspend"],
    ["bill", "list"],
    ["bill", "cancel"],
    ["refund"],
    ["settlement"],
    ["settlement", "show"],
]
SALES_MUTATING = [
    ["item", "add"],
    ["item", "import"],
    *[["stock", move] for move in ("in", "out", "count", "transfer")],
    ["bill", "suspend"],
    ["bill", "cancel"],
    ["refund"],
]


@pytest.mark.parametrize("path", SALES_PATHS, ids=" ".join)
def test_sales_help(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *path, "--help")
    assert (code, err) == (0, "")
    assert out.startswith("usage: mms")
    if len(path) > 1:
        assert ("--request-id" in out) == (path in SALES_MUTATING)


def test_top_level_help_lists_the_sales_commands(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "--help")
    for command in ("item", "stock", "bill", "refund", "settlement"):
        assert f"    {command} " in out


def checkout_request(*argv: str) -> transaction_pb2.CheckoutRequest:
    return cli.build_checkout_request(cli.parse_args(["checkout", *argv]))


def test_checkout_lines_in_the_order_given() -> None:
    request = checkout_request(
        "--phone", PHONE, "--item", "D001=6", "--barcode", "6921168509256=2",
        "--item", "F003=1.35", "--item", "H003@120", "--item", " T001 ",
    )  # fmt: skip
    assert list(request.lines) == [
        transaction_pb2.BillLine(sku="D001", quantity_milli=6000),
        transaction_pb2.BillLine(barcode="6921168509256", quantity_milli=2000),
        transaction_pb2.BillLine(sku="F003", quantity_milli=1350),
        transaction_pb2.BillLine(sku="H003", quantity_milli=1000, unit_price_fen=12_000),
        transaction_pb2.BillLine(sku="T001", quantity_milli=1000),
    ]
    assert request.list_amount_fen == 0
    assert request.suspended_bill_no == 0
    assert [(t.method, t.take_rest) for t in request.tenders] == [(SV, True)]


def test_checkout_quantities_are_exact() -> None:
    # 0.1 + 0.2 kinds of input: thousandths as integers, never a float
    for text, milli in (("0.1", 100), ("0.3", 300), ("2.675", 2675), ("100000", 100_000_000)):
        (line,) = checkout_request("--item", f"F003={text}").lines
        assert line.quantity_milli == milli


def test_checkout_price_goes_on_the_one_line() -> None:
    (line,) = checkout_request("--item", "H003", "--price", "99.9").lines
    assert (line.sku, line.unit_price_fen) == ("H003", 9990)
    (line,) = checkout_request("--item", "H003=2@15").lines
    assert (line.quantity_milli, line.unit_price_fen) == (2000, 1500)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--item", "D001", "--amount", "5"], "give --amount or the bill's lines"),
        ([], "give --amount, the bill's lines (--item, --barcode) or --bill N"),
        (["--item", "A", "--item", "B", "--price", "1"], "--price is for a bill of one line"),
        (["--item", "A@2", "--price", "1"], "the price is given twice"),
        (["--item", "A", "--payer", "card:C2=5"], "--payer pays a member's bill"),
    ],
)
def test_checkout_line_clashes(
    argv: list[str], message: str, nobody_listens: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(cli.UsageError, match=re.escape(message)):
        checkout_request(*argv)
    code, out, err = run(capsys, "checkout", *argv, "--server", nobody_listens)
    assert (code, out) == (2, "")  # a call would have exited 3
    assert f"mms checkout: error: {message}" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["checkout", "--item", "D001=0"],
        ["checkout", "--item", "D001=1.2345"],
        ["checkout", "--item", "D001=-1"],
        ["checkout", "--item", "D001=1e3"],
        ["checkout", "--item", "=2"],
        ["checkout", "--item", "D001@0"],
        ["checkout", "--item", "D001@1.001"],
        ["checkout", "--barcode", ""],
        ["checkout", "--item", "H003", "--price", "0"],
        ["checkout", "--phone", PHONE, "--item", "A", "--payer", "13900139000=5"],
        ["checkout", "--phone", PHONE, "--item", "A", "--payer", "name:王=5"],
        ["checkout", "--phone", PHONE, "--item", "A", "--payer", "card:=5"],
        ["checkout", "--phone", PHONE, "--item", "A", "--payer", "card:C2=0"],
        ["checkout", "--phone", PHONE, "--item", "A", "--payer", "id:x"],
        ["checkout", "--item", "A", "--bill", "0"],
        ["refund"],
        ["refund", "0"],
        ["refund", "5", "--line", "1"],
        ["refund", "5", "--line", "0=1"],
        ["refund", "5", "--line", "1=0"],
        ["refund", "5", "--amount", "0"],
        ["settlement", "show", "x"],
        ["bill", "suspend", "--item", "A"],  # --store missing
        ["bill", "list"],
        ["bill", "cancel", "1"],
        ["bill", "cancel", "x", "--store", "S001"],
        ["stock", "in", "--store", "S001", "--sku", "A", "--qty", "0"],
        ["stock", "out", "--store", "S001", "--sku", "A"],
        ["stock", "count", "--store", "S001", "--sku", "A", "--qty", "-1"],
        ["stock", "transfer", "--store", "S001", "--sku", "A", "--qty", "1"],
        ["item", "add", "--sku", "A", "--name", "A", "--category", "c"],  # --price missing
        ["item", "add", "--sku", "A", "--name", "A", "--category", "c", "--price", "1.005"],
        ["item", "add", "--sku", "A", "--name", "A", "--category", "c", "--price", "1",
         "--member-price", "gold"],
        ["item", "show"],
        ["item", "show", "--sku", "A", "--barcode", "123"],
        ["item", "list", "--page-size", "0"],
    ],
)  # fmt: skip
def test_sales_usage_errors_exit_2(
    argv: list[str], nobody_listens: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *argv, "--server", nobody_listens)
    assert (code, out) == (2, ""), err
    assert "error:" in err


def test_checkout_payers_pay_first() -> None:
    request = checkout_request(
        "--card", "C1", "--item", "H002", "--payer", "phone:13900139000=50",
        "--payer", "card:C3", "--payer", "id:7=1.5", "--pay", "balance+cash",
        "--cash-received", "400",
    )  # fmt: skip
    assert [
        (t.method, t.amount_fen, t.take_rest, t.payer.WhichOneof("key"), t.cash_received_fen)
        for t in request.tenders
    ] == [
        (SV, 5000, False, "phone", 0),
        (SV, 0, True, "card_no", 0),
        (SV, 150, False, "member_id", 0),
        (SV, 0, True, None, 0),
        (CASH, 0, True, None, 40_000),
    ]
    assert request.tenders[0].payer.phone == "13900139000"
    assert request.tenders[1].payer.card_no == "C3"
    assert request.tenders[2].payer.member_id == 7


def suspended_bill(**fields: Any) -> transaction_pb2.SuspendedBill:
    return transaction_pb2.SuspendedBill(
        bill_no=4,
        store_code="S001",
        member=common_pb2.MemberRef(phone=PHONE),
        lines=[transaction_pb2.BillLine(sku="H001", quantity_milli=1000)],
        staff_code="S07",
        **fields,
    )


def test_checkout_of_a_suspended_bill() -> None:
    args = cli.parse_args(["checkout", "--bill", "4", "--store", "S001"])
    request = cli.build_checkout_request(args, suspended_bill())
    assert request.suspended_bill_no == 4
    assert request.member == common_pb2.MemberRef(phone=PHONE)
    assert [line.sku for line in request.lines] == ["H001"]
    assert (request.staff_code, request.store_code, request.list_amount_fen) == ("S07", "S001", 0)
    # what the command gives wins over the bill
    args = cli.parse_args(
        ["checkout", "--bill", "4", "--store", "S001", "--card", "C9", "--item", "D001=2",
         "--staff", "S01"]
    )  # fmt: skip
    request = cli.build_checkout_request(args, suspended_bill())
    assert request.member == common_pb2.MemberRef(card_no="C9")
    assert [(line.sku, line.quantity_milli) for line in request.lines] == [("D001", 2000)]
    assert request.staff_code == "S01"
    # a walk-in's quick bill
    quick = transaction_pb2.SuspendedBill(bill_no=2, store_code="S001", list_amount_fen=3550)
    args = cli.parse_args(["checkout", "--bill", "2", "--store", "S001"])
    request = cli.build_checkout_request(args, quick)
    assert (request.list_amount_fen, request.HasField("member"), len(request.lines)) == (
        3550,
        False,
        0,
    )
    assert [t.method for t in request.tenders] == [CASH]


def test_checkout_of_a_bill_needs_its_store(
    nobody_listens: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "checkout", "--bill", "1", "--server", nobody_listens)
    assert (code, out) == (2, "")
    assert "--bill needs --store" in err


def test_refund_requests() -> None:
    args = cli.parse_args(
        ["refund", "17", "--line", "1=2", "--line", "3=0.35", "--reason", "退货", "--staff", "S1"]
    )
    request = cli_sales.build_refund_request(args)
    assert request.settlement_seq == 17
    assert [(line.line_no, line.quantity_milli) for line in request.lines] == [(1, 2000), (3, 350)]
    assert (request.amount_fen, request.reason, request.staff_code) == (0, "退货", "S1")
    assert request.request_id == args.request_id
    by_amount = cli_sales.build_refund_request(cli.parse_args(["refund", "17", "--amount", "8.3"]))
    assert (by_amount.amount_fen, len(by_amount.lines)) == (830, 0)
    everything = cli_sales.build_refund_request(cli.parse_args(["refund", "17", "--store", "S2"]))
    assert (everything.amount_fen, len(everything.lines), everything.store_code) == (0, 0, "S2")
    for argv, message in (
        (["--line", "1=1", "--amount", "1"], "refund by --line or by --amount, not both"),
        (["--line", "1=1", "--line", "1=2"], "--line 1 is given twice"),
    ):
        with pytest.raises(cli.UsageError, match=re.escape(message)):
            cli_sales.build_refund_request(cli.parse_args(["refund", "17", *argv]))


@pytest.mark.parametrize(
    ("move", "expected"),
    [
        ("in", catalog_pb2.STOCK_IN),
        ("out", catalog_pb2.STOCK_OUT),
        ("count", catalog_pb2.STOCK_ADJUST),
        ("transfer", catalog_pb2.STOCK_TRANSFER),
    ],
)
def test_stock_requests(move: str, expected: int) -> None:
    argv = ["stock", move, "--store", "S001", "--sku", "F001", "--qty", "1.5", "--reason", "r"]
    if move == "transfer":
        argv += ["--to-store", "S002"]
    args = cli.parse_args(argv)
    request = cli_sales.build_adjust_stock_request(args)
    assert (request.move, request.quantity_milli, request.sku, request.store_code) == (
        expected,
        1500,
        "F001",
        "S001",
    )
    assert request.to_store_code == ("S002" if move == "transfer" else "")
    assert request.reason == "r"
    counted = cli.parse_args(["stock", "count", "--store", "S1", "--sku", "A", "--qty", "0"])
    assert cli_sales.build_adjust_stock_request(counted).quantity_milli == 0


def test_item_add_builds_the_item() -> None:
    args = cli.parse_args(
        ["item", "add", "--sku", "D001", "--name", "可乐", "--category", "drinks",
         "--price", "3.5", "--member-price", "silver=3.3", "--member-price", "gold=3",
         "--barcode", " 6901939621271 ", "--track-stock"]
    )  # fmt: skip
    assert cli_sales.build_item(args) == catalog_pb2.CatalogItem(
        sku="D001",
        name="可乐",
        category_code="drinks",
        kind=catalog_pb2.GOODS,
        retail_price_fen=350,
        member_prices=[
            catalog_pb2.LevelPrice(level_code="silver", price_fen=330),
            catalog_pb2.LevelPrice(level_code="gold", price_fen=300),
        ],
        barcode="6901939621271",
        track_stock=True,
    )
    service = cli.parse_args(
        ["item", "add", "--sku", "H3", "--name", "造型", "--category", "hair", "--price", "0",
         "--service", "--inactive", "--no-discount"]
    )  # fmt: skip
    item = cli_sales.build_item(service)
    assert (item.kind, item.retail_price_fen, item.inactive, item.no_discount) == (
        catalog_pb2.SERVICE,
        0,
        True,
        True,
    )
    base = ["item", "add", "--sku", "A", "--name", "A", "--category", "c", "--price", "1"]
    for extra, message in (
        (["--service", "--track-stock"], "--track-stock is for goods"),
        (["--member-price", "gold=1", "--member-price", "gold=2"], "--member-price gold is given"),
    ):
        with pytest.raises(cli.UsageError, match=re.escape(message)):
            cli_sales.build_item(cli.parse_args(base + extra))


def test_suspend_requests() -> None:
    args = cli.parse_args(
        ["bill", "suspend", "--store", "S001", "--terminal", "T1", "--card", "C1",
         "--item", "H001", "--barcode", "69012345=2", "--note", "等朋友"]
    )  # fmt: skip
    request = cli_sales.build_suspend_request(args)
    assert (request.store_code, request.terminal_id, request.note) == ("S001", "T1", "等朋友")
    assert request.member == common_pb2.MemberRef(card_no="C1")
    assert [(line.sku, line.barcode, line.quantity_milli) for line in request.lines] == [
        ("H001", "", 1000),
        ("", "69012345", 2000),
    ]
    quick = cli.parse_args(["bill", "suspend", "--store", "S001", "--amount", "35.5"])
    request = cli_sales.build_suspend_request(quick)
    assert (request.list_amount_fen, len(request.lines), request.HasField("member")) == (
        3550,
        0,
        False,
    )
    for extra in ([], ["--item", "A", "--amount", "1"]):
        with pytest.raises(cli.UsageError, match="one of them"):
            cli_sales.build_suspend_request(
                cli.parse_args(["bill", "suspend", "--store", "S001", *extra])
            )


def test_derived_request_ids_stay_within_the_bound() -> None:
    assert cli_sales.derived_request_id("cfg-1", "-items-0") == "cfg-1-items-0"
    long_id = "r" * 64
    derived = cli_sales.derived_request_id(long_id, "-items-12")
    assert len(derived) <= 64 and derived.endswith("-items-12")
    assert derived == cli_sales.derived_request_id(long_id, "-items-12")  # the same each run
    assert derived != cli_sales.derived_request_id("r" * 63 + "s", "-items-12")


def settled_line(line_no: int, sku: str, name: str, **fen: int) -> records_pb2.SettledLine:
    return records_pb2.SettledLine(line_no=line_no, sku=sku, name=name, **fen)


RECEIPT = transaction_pb2.CheckoutResponse(
    member_id=1,
    card_no="C0001",
    list_amount_fen=10_470,
    discount_bp=500,
    discount_fen=20,
    coupon_fen=1_000,
    coupons=[coupon_pb2.CouponUse(code="Q1", template_name="满100减10", discount_fen=1_000)],
    rounding_fen=5,
    amount_due_fen=9_445,
    points_redeemed=100,
    points_value_fen=100,
    payments=[
        common_pb2.Payment(
            method=SV, amount_fen=4_000, principal_fen=4_000, member_id=2, card_no="C0002"
        ),
        common_pb2.Payment(
            method=CASH, amount_fen=5_345, cash_received_fen=6_000, change_fen=655
        ),
    ],
    points_earned=53,
    balances=common_pb2.Balances(principal_fen=100, bonus_fen=0, points=53),
    level_before="regular",
    level_after="regular",
    ledger_seq=9,
    store_code="S001",
    lines=[
        settled_line(1, "D002", "矿泉水", quantity_milli=2000, unit_price_fen=200,
                     list_fen=400, member_discount_fen=20, points_fen=4, rounding_fen=1,
                     due_fen=375),
        settled_line(2, "F003", "苹果", quantity_milli=1350, unit_price_fen=1280,
                     list_fen=1728, coupon_fen=1000, points_fen=96, rounding_fen=4,
                     due_fen=628),
    ],
)  # fmt: skip


def test_receipt_text() -> None:
    expected = """\
Checkout 消费
  Member 会员                        #1
  Card 卡号                          C0001
  List price 原价                    104.70
  Discount 折扣                      0.20 (5%)
  Coupon 优惠券 Q1                   -10.00 (满100减10)
  Rounding 抹零                      0.05
  Amount due 应付                    94.45
  Points used 积分抵现               100 = 1.00
  Paid 支付 stored value 储值 of #2  40.00 (principal 本金 40.00, bonus 赠送金 0.00) card 卡号 C0002
  Paid 支付 cash 现金                53.45 (received 实收 60.00, change 找零 6.55)
  Points earned 获得积分             53
  Balance 余额                       1.00 (principal 本金 1.00 + bonus 赠送金 0.00)
  Points 积分                        53
  Level 等级                         regular
  Ledger seq 流水号                  9
  Store 门店                         S001
  Time 时间                          -
  Request 请求号                     till-9

Lines 明细
  NO  SKU   ITEM    QTY   PRICE  LIST   DISCOUNT  COUPON  POINTS  ROUNDING  DUE
  1   D002  矿泉水  2     2.00   4.00   -0.20     -       -0.04   -0.01     3.75
  2   F003  苹果    1.35  12.80  17.28  -         -10.00  -0.96   -0.04     6.28"""
    assert cli._checkout_text(RECEIPT, "till-9") == expected


def test_a_quick_receipt_has_no_lines_and_no_empty_steps() -> None:
    quick = transaction_pb2.CheckoutResponse(
        list_amount_fen=3720,
        amount_due_fen=3720,
        payments=[common_pb2.Payment(method=CASH, amount_fen=3720)],
        lines=[records_pb2.SettledLine(line_no=1, list_fen=3720, due_fen=3720)],
    )
    text = cli._checkout_text(quick, "r")
    assert "Lines" not in text and "Coupons" not in text and "Rounding" not in text
    assert text.splitlines()[1].split() == ["Member", "会员", "walk-in", "散客"]


def test_refund_and_settlement_text() -> None:
    refund = transaction_pb2.RefundResponse(
        settlement_seq=9,
        ledger_seq=12,
        refunded_fen=375,
        payments=[
            common_pb2.Payment(
                method=SV, amount_fen=160, principal_fen=160, member_id=2, card_no="C0002"
            ),
            common_pb2.Payment(method=CASH, amount_fen=215),
        ],
        points_returned=4,
        points_clawed_back=3,
        lines=[
            settled_line(1, "D002", "矿泉水", quantity_milli=2000, unit_price_fen=200,
                         list_fen=400, member_discount_fen=20, points_fen=4, rounding_fen=1,
                         due_fen=375),
            settled_line(2, "F003", "苹果", unit_price_fen=1280),  # nothing of it: left out
        ],
        balances=common_pb2.Balances(principal_fen=100, points=54),
        level_before="silver",
        level_after="regular",
        fully_refunded=False,
    )  # fmt: skip
    summary, lines = cli_sales._refund_text(refund, "ret-1").split("\n\n")
    assert summary.splitlines()[0] == "Refund 退货"
    assert "  Refunded 退款 stored value 储值 to #2  1.60 (principal 本金 1.60, " in summary
    assert "Points returned 退回积分" in summary and "silver → regular" in summary
    assert "Fully refunded 全部退完" in summary and "no 否" in summary
    assert lines.splitlines()[1:] == [
        "  NO  SKU   ITEM    QTY  PRICE  LIST  DISCOUNT  POINTS  ROUNDING  DUE",
        "  1   D002  矿泉水  2    2.00   4.00  -0.20     -0.04   -0.01     3.75",
    ]
    settlement = records_pb2.Settlement(
        seq=9,
        store_code="S001",
        lines=[
            settled_line(1, "D002", "矿泉水", quantity_milli=2000, unit_price_fen=200,
                         list_fen=400, due_fen=400, refunded_quantity_milli=1000),
            settled_line(2, "", "", quantity_milli=1000, list_fen=500, due_fen=500,
                         refunded_fen=120),
        ],
        payments=[common_pb2.Payment(method=CASH, amount_fen=900)],
        due_fen=900,
        refund_seqs=[10, 11],
        refunded_fen=320,
    )  # fmt: skip
    summary, lines = cli_sales._settlement_text(settlement).split("\n\n")
    assert summary.splitlines()[0] == "Settlement 结算单 9"
    assert "  Refunds 退货" in summary and "10, 11" in summary
    assert [line.split()[-1] for line in lines.splitlines()[1:]] == ["REFUNDED", "2", "1.20"]
    assert "1 of 2" in lines


def test_bills_text() -> None:
    response = transaction_pb2.ListSuspendedBillsResponse(
        bills=[
            suspended_bill(terminal_id="T1", note="去取钱\n马上回"),
            transaction_pb2.SuspendedBill(bill_no=5, list_amount_fen=3550),
            transaction_pb2.SuspendedBill(
                bill_no=6,
                member=common_pb2.MemberRef(member_id=3),
                lines=[
                    transaction_pb2.BillLine(
                        barcode="69012345", quantity_milli=1500, unit_price_fen=990
                    )
                ],
            ),  # fmt: skip
        ]
    )
    rows = [line.split("  ") for line in cli_sales._bills_text("S001", response).splitlines()]
    text = cli_sales._bills_text("S001", response)
    assert text.splitlines()[0] == "Suspended bills 挂单 at S001"
    assert "H001×1" in text and "去取钱 马上回" in text and "S07" in text
    assert "amount 金额 35.50" in text and "walk-in 散客" in text
    assert "#3" in text and "69012345×1.5@9.90" in text
    assert len(rows) == 5


def test_item_import_parses_gbk_and_reports_rows(tmp_path: Path) -> None:
    from engine import item_import

    path = tmp_path / "items.csv"
    path.write_bytes(
        (
            "商品编码,名称,分类,类型,零售价,条码,不打折,管理库存,停售,会员价:gold\n"
            "A1,可乐,drinks,商品,3.50,6901939621271,否,是,,3\n"
            "A2,剪发,hair,服务,30,,,,是,\n"
            "A3,坏价,food,,3.5.0,,,,,\n"
            "A4,坏标志,food,,1,,maybe,,,\n"
            "A5,坏类型,food,drink,1,,,,,\n"
            ",无编码,food,,1,,,,,\n"
            "A6,重复条码,food,,1,6901939621271,,,,\n"
            "\n"
        ).encode("gbk")
    )
    parsed = item_import.parse_items(str(path))
    assert (parsed.encoding, parsed.rows) == ("GB18030", 7)
    assert [(row, item.sku) for row, item in parsed.items] == [(2, "A1"), (3, "A2")]
    assert parsed.items[0][1] == catalog_pb2.CatalogItem(
        sku="A1",
        name="可乐",
        category_code="drinks",
        kind=catalog_pb2.GOODS,
        retail_price_fen=350,
        barcode="6901939621271",
        track_stock=True,
        member_prices=[catalog_pb2.LevelPrice(level_code="gold", price_fen=300)],
    )
    assert (parsed.items[1][1].kind, parsed.items[1][1].inactive) == (catalog_pb2.SERVICE, True)
    assert [(error.row_number, error.reason) for error in parsed.errors] == [
        (4, "AMOUNT_INVALID"),
        (5, "FLAG_INVALID"),
        (6, "KIND_INVALID"),
        (7, "FIELD_MISSING"),
        (8, "BARCODE_DUPLICATE"),
    ]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("sku,name,category\n", "the header has no price column"),
        ("sku,name,category,price,colour\n", "'colour' is not a known column"),
        ("sku,name,category,price,sku\n", "sku is given twice"),
        ("sku,name,category,price,member_price:\n", "names no level"),
    ],
)
def test_item_import_refuses_a_bad_header_before_any_call(
    header: str,
    message: str,
    tmp_path: Path,
    nobody_listens: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "items.csv"
    path.write_text(header + "A,B,c,1,x\n", encoding="utf-8")
    code, out, err = run(capsys, "item", "import", str(path), "--server", nobody_listens)
    assert (code, out) == (2, "")  # a call would have exited 3
    assert message in err
