"""`mms` without a server: parsing, request building, JSON conversion, help and usage.

Nothing here makes a call. A usage error is run with `--server` at a loopback port
nobody listens on: a call there would exit 3, so exit 2 proves none was made. Every
command's output against the real server is in test_cli_e2e.py.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from engine import cli
from engine.proto import common_pb2, member_pb2, transaction_pb2

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "merchant.toml"
PHONE = "13800138000"
SV = common_pb2.STORED_VALUE
CASH = common_pb2.CASH


@pytest.fixture
def nobody_listens() -> str:
    """A loopback address with nothing listening: a call to it exits 3, never 2."""
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
    ],
    ids=["recharge", "checkout", "cash-received"],
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
    assert plain.merchant == "default"
    args = cli.parse_args(
        [
            "serve", "--data", "/d", "--listen", "0.0.0.0:7", "--metrics-port", "0",
            "--merchant", "m2", "--no-sync",
        ]
    )  # fmt: skip
    assert (args.data, args.listen, args.metrics_port, args.no_sync) == (
        "/d",
        "0.0.0.0:7",
        0,
        True,
    )
    assert args.merchant == "m2"
    assert cli.parse_args(["--merchant", "m3", "serve"]).merchant == "m3"


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
    balances=common_pb2.Balances(principal_fen=0, bonus_fen=0, points=1850),
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
