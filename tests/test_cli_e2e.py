"""`mms` end to end: the real command in a child process against a real server.

Every amount is asserted to the fen. Expected values follow examples/merchant.toml:
普通 Regular 0% off and 1 point per yuan, 银卡 Silver 5% off and 1.2 points per yuan
(reached by one recharge of ¥500), bonus 充100送10 / 充500送80 / 充1000送200, principal
spent first, points rounded down.

Most tests get a server of their own. The output tests share one server for the module,
each on a merchant of its own (`--merchant`), so their merchants start empty and their
member ids and ledger sequences start at 1.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import RunningServer, acting_as, token_env
from engine import cli
from engine.config_file import load_config, loads_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "merchant.toml"
COMMAND_TIMEOUT_S = 60
PHONE = "13800138000"
CARD = "C0001"


def mms(
    address: str,
    *argv: str,
    expect: int = 0,
    cwd: Path = REPO,
    stdin: str = "",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs `python -m engine ARGV --server ADDRESS` and checks its exit code. Its stdin
    is `stdin` on a pipe, never a terminal, so nothing waits for a PIN to be typed."""
    result = subprocess.run(
        [sys.executable, "-m", "engine", *argv, "--server", address],
        check=False,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=COMMAND_TIMEOUT_S,
        env={**os.environ, **token_env(address, argv), "PYTHONIOENCODING": "utf-8", **(env or {})},
    )
    assert result.returncode == expect, (argv, result.stdout, result.stderr)
    return result


def mms_json(address: str, *argv: str) -> dict[str, Any]:
    return json.loads(mms(address, *argv, "--json").stdout)


def refused(address: str, *argv: str, status: str, reason: str) -> str:
    """Runs a command the server must refuse; returns stderr."""
    result = mms(address, *argv, expect=1)
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {status} {reason}: "), result.stderr
    return result.stderr


_ROW = re.compile(r"  (\S.*?)  +(\S.*)")


def _columns(text: str) -> int:
    """Terminal columns: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def fields(text: str) -> tuple[str, dict[str, str]]:
    """The title and `label  value` rows of a text block; checks the values line up."""
    title, *lines = text.rstrip("\n").split("\n")
    matches = [_ROW.fullmatch(line) for line in lines]
    assert all(matches), text
    starts = {_columns(line[: m.start(2)]) for line, m in zip(lines, matches, strict=True) if m}
    assert len(starts) == 1, text
    return title, {m.group(1): m.group(2) for m in matches if m}


def table(text: str) -> list[list[str]]:
    """The rows of a table block, its header first (cells are 2+ spaces apart)."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()[1:]]


@pytest.fixture
def address(server: Any) -> str:
    """A server with examples/merchant.toml applied."""
    mms(server.address, "config", "apply", str(EXAMPLE))
    return str(server.address)


@pytest.fixture
def member_id(address: str) -> int:
    data = mms_json(
        address,
        "member",
        "register",
        "--phone",
        PHONE,
        "--name",
        "张三",
        "--card",
        CARD,
    )
    return int(data["member"]["member_id"])


# --- config ---------------------------------------------------------------------------


def test_config_apply_and_show(server: Any) -> None:
    data = mms_json(server.address, "config", "apply", str(EXAMPLE), "--request-id", "cfg-1")
    assert data["request_id"] == "cfg-1"
    config = data["config"]
    assert config["version"] == 1
    assert config["applied_at_ms"] > 0
    assert [level["code"] for level in config["levels"]] == [
        "regular",
        "silver",
        "gold",
        "diamond",
    ]
    assert config["levels"][1]["upgrade_single_recharge_fen"] == 50_000
    assert config["levels"][1]["upgrade_single_recharge"] == "500.00"
    assert config["recharge_bonus_rules"][2] == {
        "min_recharge_fen": 100_000,
        "min_recharge": "1000.00",
        "bonus_fen": 20_000,
        "bonus": "200.00",
    }
    shown = mms(server.address, "config", "show", "--toml").stdout
    assert loads_config(shown) == load_config(EXAMPLE)
    assert "# version 1, applied " in shown
    text = mms(server.address, "config", "show").stdout
    assert "钻石 Diamond" in text and "15%" in text
    again = mms_json(server.address, "config", "apply", str(EXAMPLE))
    assert again["config"]["version"] == 2


def test_config_apply_refusals(server: Any, tmp_path: Path) -> None:
    typo = tmp_path / "typo.toml"
    typo.write_text(EXAMPLE.read_text(encoding="utf-8").replace("discount =", "discont =", 1))
    result = mms(server.address, "config", "apply", str(typo), expect=2)
    assert "levels[0].discont: is not a known key" in result.stderr
    assert "levels[0].discount: is required" in result.stderr
    bad_code = tmp_path / "bad_code.toml"
    bad_code.write_text(EXAMPLE.read_text(encoding="utf-8").replace('"S002"', '"S 2"'))
    refused(
        server.address,
        "config",
        "apply",
        str(bad_code),
        status="INVALID_ARGUMENT",
        reason="CONFIG_INVALID",
    )
    # Regions (大区): a store names a declared one; once applied, a region stays.
    undeclared = tmp_path / "undeclared.toml"
    undeclared.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace('region = "WEST"', 'region = "NORTH"')
    )
    result = refused(
        server.address, "config", "apply", str(undeclared),
        status="INVALID_ARGUMENT", reason="CONFIG_INVALID",
    )  # fmt: skip
    assert 'store "S003" names region "NORTH", which regions do not declare' in result
    mms(server.address, "config", "apply", str(EXAMPLE))
    text = EXAMPLE.read_text(encoding="utf-8")
    dropped = tmp_path / "dropped.toml"
    dropped.write_text(
        text.replace('[[regions]]\ncode = "WEST"\nname = "华西大区 West China"\n', "").replace(
            'region = "WEST"\n', ""
        )
    )
    assert "WEST" not in dropped.read_text(encoding="utf-8")
    result = refused(
        server.address, "config", "apply", str(dropped),
        status="FAILED_PRECONDITION", reason="REGION_IN_USE",
    )  # fmt: skip
    assert 'region "WEST" cannot be removed' in result


def test_commands_before_any_config(server: Any) -> None:
    refused(
        server.address, "member", "register", "--phone", PHONE, "--name", "张三",
        status="FAILED_PRECONDITION", reason="MERCHANT_NOT_CONFIGURED",
    )  # fmt: skip


# --- members --------------------------------------------------------------------------


def test_register_and_show_by_each_key(address: str) -> None:
    data = mms_json(
        address,
        "member",
        "register",
        "--phone",
        PHONE,
        "--name",
        "张三",
        "--card",
        CARD,
    )
    member = data["member"]
    assert member["member_id"] == 1
    assert member["level_code"] == "regular"
    assert member["store_code"] == "S001"  # the first store
    assert data["balances"] == {
        "principal_fen": 0,
        "principal": "0.00",
        "bonus_fen": 0,
        "bonus": "0.00",
        "points": 0,
        "uses": [],
    }
    for selector in (["--phone", PHONE], ["--card", CARD], ["--id", "1"]):
        shown = mms_json(address, "member", "show", *selector)
        assert shown["member"] == member
        assert shown["level_name"] == "普通 Regular"
    text = mms(address, "member", "show", "--phone", PHONE).stdout
    assert "#1 张三" in text and "普通 Regular" in text


def test_register_refusals(address: str, member_id: int) -> None:
    refused(
        address, "member", "register", "--phone", "12345", "--name", "李四",
        status="INVALID_ARGUMENT", reason="PHONE_MALFORMED",
    )  # fmt: skip
    refused(
        address, "member", "register", "--phone", PHONE, "--name", "李四",
        status="ALREADY_EXISTS", reason="PHONE_TAKEN",
    )  # fmt: skip
    refused(
        address, "member", "register", "--phone", "13900139000", "--name", "李四", "--card", CARD,
        status="ALREADY_EXISTS", reason="CARD_TAKEN",
    )  # fmt: skip
    mms(address, "member", "register", "--phone", "13900139000", expect=2)  # --name missing


def test_show_refusals(address: str) -> None:
    refused(
        address,
        "member",
        "show",
        "--phone",
        "13700137000",
        status="NOT_FOUND",
        reason="MEMBER_NOT_FOUND",
    )
    refused(
        address,
        "member",
        "show",
        "--id",
        "999",
        status="NOT_FOUND",
        reason="MEMBER_NOT_FOUND",
    )
    mms(address, "member", "show", "--id", "0", expect=2)
    refused(
        address, "member", "show", "--qr", f"MMS:{CARD}",  # the old static form
        status="INVALID_ARGUMENT", reason="QR_INVALID",
    )  # fmt: skip


def into_a_closed_pipe(*argv: str) -> subprocess.CompletedProcess[str]:
    """Runs `python -m engine ARGV` with stdout on a pipe nobody reads any more, as
    `mms ... | head -1` leaves it once head has its line."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        address = argv[argv.index("--server") + 1] if "--server" in argv else ""
        return subprocess.run(
            [sys.executable, "-m", "engine", *argv],
            check=False,
            cwd=REPO,
            env={**os.environ, **token_env(address, argv)},
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)


def test_a_reader_that_stops_reading_is_no_error(address: str, member_id: int) -> None:
    for argv in (["member", "show", "--phone", PHONE, "--server", address], ["--help"]):
        result = into_a_closed_pipe(*argv)
        assert (result.returncode, result.stderr) == (0, ""), argv


# --- recharge and checkout ------------------------------------------------------------


def test_recharge_then_checkout_with_balance(address: str, member_id: int) -> None:
    recharge = mms_json(address, "recharge", "--phone", PHONE, "--amount", "100")
    assert recharge["member_id"] == member_id
    assert (recharge["amount_fen"], recharge["amount"]) == (10_000, "100.00")
    assert (recharge["bonus_fen"], recharge["bonus"]) == (1_000, "10.00")
    assert recharge["balances"]["principal_fen"] == 10_000
    assert recharge["balances"]["principal"] == "100.00"
    assert recharge["balances"]["bonus_fen"] == 1_000
    assert recharge["balances"]["bonus"] == "10.00"
    assert (recharge["level_before"], recharge["level_after"]) == ("regular", "regular")
    assert recharge["level_upgraded"] is False
    assert recharge["store_code"] == "S001"
    checkout = mms_json(address, "checkout", "--card", CARD, "--amount", "58.50")
    assert checkout["member_id"] == member_id
    assert (
        checkout["list_amount_fen"],
        checkout["discount_bp"],
        checkout["discount_fen"],
    ) == (5850, 0, 0)
    assert (checkout["amount_due_fen"], checkout["amount_due"]) == (5850, "58.50")
    assert checkout["points_redeemed"] == 0
    (payment,) = checkout["payments"]
    assert payment["method"] == "STORED_VALUE"
    assert (payment["amount_fen"], payment["principal_fen"], payment["bonus_fen"]) == (
        5850,
        5850,
        0,
    )
    assert checkout["points_earned"] == 58  # 58.50 yuan at 1 point per yuan, rounded down
    assert checkout["balances"] == {
        "principal_fen": 4150,
        "principal": "41.50",
        "bonus_fen": 1000,
        "bonus": "10.00",
        "points": 58,
        "uses": [],
    }
    assert checkout["level_upgraded"] is False
    assert checkout["ledger_seq"] == recharge["ledger_seq"] + 1
    member = mms_json(address, "member", "show", "--id", str(member_id))["member"]
    assert member["cumulative_recharge_fen"] == 10_000
    assert member["cumulative_spend_fen"] == 5850


def test_recharge_upgrades_and_the_discount_applies(address: str, member_id: int) -> None:
    recharge = mms_json(
        address,
        "recharge",
        "--id",
        str(member_id),
        "--amount",
        "500",
        "--method",
        "scan_pay",
        "--ref",
        "WX-1",
    )
    assert recharge["bonus_fen"] == 8_000  # 充500送80
    assert (recharge["level_before"], recharge["level_after"]) == ("regular", "silver")
    assert recharge["level_upgraded"] is True
    text = mms(address, "checkout", "--id", str(member_id), "--amount", "100").stdout
    assert "Discount 折扣" in text and "5.00 (5%)" in text
    assert "95.00" in text
    member = mms_json(address, "member", "show", "--id", str(member_id))
    assert member["balances"]["principal_fen"] == 50_000 - 9_500
    assert member["balances"]["bonus_fen"] == 8_000
    assert member["balances"]["points"] == 114  # 95 yuan at 1.2 points per yuan


def test_walk_in_cash_checkout_with_change(address: str) -> None:
    checkout = mms_json(
        address,
        "checkout",
        "--amount",
        "37.20",
        "--cash-received",
        "50",
        "--store",
        "S002",
    )
    assert checkout["member_id"] == 0
    assert (checkout["amount_due_fen"], checkout["amount_due"]) == (3720, "37.20")
    assert checkout["discount_fen"] == 0
    (payment,) = checkout["payments"]
    assert payment["method"] == "CASH"
    assert (payment["amount_fen"], payment["cash_received_fen"]) == (3720, 5000)
    assert (payment["change_fen"], payment["change"]) == (1280, "12.80")
    assert checkout["points_earned"] == 0
    assert checkout["store_code"] == "S002"
    text = mms(address, "checkout", "--amount", "10", "--cash-received", "20").stdout
    assert "walk-in 散客" in text and "change 找零 10.00" in text
    assert "Balance" not in text and "Points earned" not in text


def test_retry_with_the_same_request_id_applies_once(address: str, member_id: int) -> None:
    argv = (
        "recharge",
        "--id",
        str(member_id),
        "--amount",
        "100",
        "--request-id",
        "till-1-0001",
    )
    first = mms_json(address, *argv)
    second = mms_json(address, *argv)
    assert second == first
    shown = mms_json(address, "member", "show", "--id", str(member_id))
    assert shown["balances"]["principal_fen"] == 10_000


def test_recharge_refusals(address: str, member_id: int) -> None:
    refused(
        address,
        "recharge",
        "--id",
        "999",
        "--amount",
        "100",
        status="NOT_FOUND",
        reason="MEMBER_NOT_FOUND",
    )
    refused(
        address, "recharge", "--id", str(member_id), "--amount", "100", "--store", "S999",
        status="NOT_FOUND", reason="STORE_NOT_FOUND",
    )  # fmt: skip
    refused(
        address, "recharge", "--id", str(member_id), "--amount", "10000000.01",
        status="INVALID_ARGUMENT", reason="AMOUNT_TOO_LARGE",
    )  # fmt: skip
    for amount in ("-5", "1.234", "abc", "0"):
        result = mms(address, "recharge", "--id", str(member_id), "--amount", amount, expect=2)
        assert "argument --amount:" in result.stderr


def test_checkout_refusals(address: str, member_id: int) -> None:
    mms(address, "recharge", "--id", str(member_id), "--amount", "10")  # below every bonus rule
    stderr = refused(
        address, "checkout", "--id", str(member_id), "--amount", "58.50",
        status="FAILED_PRECONDITION", reason="INSUFFICIENT_BALANCE",
    )  # fmt: skip
    assert stderr == (  # a definite answer: no note, nothing to retry
        "error: FAILED_PRECONDITION INSUFFICIENT_BALANCE: "
        "stored value is 1000 fen, 5850 fen needed\n"
    )
    refused(
        address, "checkout", "--amount", "37.20", "--cash-received", "20",
        status="INVALID_ARGUMENT", reason="CASH_RECEIVED_TOO_LOW",
    )  # fmt: skip
    # nothing was half-written by the refusals
    shown = mms_json(address, "member", "show", "--id", str(member_id))
    assert shown["balances"]["principal_fen"] == 1_000
    assert shown["member"]["cumulative_spend_fen"] == 0
    result = mms(address, "checkout", "--amount", "5", "--pay", "balance", expect=2)
    assert "needs a member" in result.stderr
    mms(address, "checkout", "--amount", "1.001", expect=2)


# --- database -------------------------------------------------------------------------


def test_backup_then_audit(address: str, member_id: int, tmp_path: Path) -> None:
    mms(address, "recharge", "--id", str(member_id), "--amount", "100")
    destination = tmp_path / "backup"
    data = mms_json(address, "db", "backup", str(destination))
    assert data == {
        "path": str(destination / "data.mdb"),
        "size_bytes": (destination / "data.mdb").stat().st_size,
    }
    assert data["size_bytes"] > 0
    # a relative destination is the command's folder, not the server's (REPO)
    text = mms(address, "db", "backup", "relative/dir", cwd=tmp_path).stdout
    copy = tmp_path / "relative" / "dir" / "data.mdb"
    size = copy.stat().st_size
    tenths_mib = size * 10 // 2**20
    assert fields(text) == (
        "Backup 备份",
        {
            "Path 路径": str(copy),
            "Size 大小": f"{size} bytes ({tenths_mib // 10}.{tenths_mib % 10} MiB)",
        },
    )
    report = mms(address, "db", "audit", str(destination)).stdout.splitlines()
    assert report[0] == f"mms db audit {destination}"
    assert report[1] == (
        "  default (config v1 '示例连锁 Demo Chain'): 1 members, 1 ledger entries; "
        "principal ¥100.00, bonus ¥10.00, points 0"
    )
    assert "owed to members: principal ¥100.00, bonus ¥10.00, points 0" in report
    assert report[-1] == "OK: every invariant of docs/STORAGE.md holds"
    audited = mms_json(address, "db", "audit", str(copy.parent))
    assert audited["ok"] is True and audited["problems"] == []
    assert audited["merchants"] == ["default"]
    totals = audited["totals"]["default"]
    assert (totals["principal_fen"], totals["bonus_fen"], totals["points"]) == (
        10_000,
        1_000,
        0,
    )
    assert (totals["members"], totals["ledger_entries"]) == (1, 1)
    missing = tmp_path / "no-such-dir"
    result = mms(address, "db", "audit", str(missing), expect=2)
    assert result.stdout == ""
    assert result.stderr == f"mms db audit: {missing} is not a directory\n"
    refused(
        address,
        "db",
        "backup",
        str(destination),
        status="FAILED_PRECONDITION",
        reason="BACKUP_FAILED",
    )


def test_unreachable_server_exits_3() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    result = mms(address, "member", "show", "--id", "1", "--timeout", "5", expect=3)
    assert result.stderr.startswith("error: UNAVAILABLE")


# --- errors a real server gives without a reason --------------------------------------


def test_a_hung_server_times_out_and_the_retry_applies_once(
    server: RunningServer, address: str, member_id: int
) -> None:
    assert server.process is not None
    recharge = ("recharge", "--id", str(member_id), "--amount", "100")
    server.process.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        started = time.monotonic()
        timed_out = mms(address, *recharge, "--request-id", "till-9", "--timeout", "1", expect=3)
        elapsed_s = time.monotonic() - started
        shown = mms(
            address, "member", "show", "--id", str(member_id), "--timeout", "0.5",
            expect=3,
        )  # fmt: skip
    finally:
        server.process.send_signal(signal.SIGCONT)
    # --timeout, not the default deadline of 10 s, ended the wait
    assert 1 <= elapsed_s < cli.CALL_TIMEOUT_S
    assert timed_out.stdout == ""
    error, *notes = timed_out.stderr.splitlines()
    assert error.startswith("error: DEADLINE_EXCEEDED: ")  # no reason: no server said
    assert notes == [
        "note: the request may not have been applied; "
        "retry with --request-id till-9 to be sure it is applied once",
        f"note: is the server running at {address}? (--server, $MMS_SERVER)",
    ]
    error, *notes = shown.stderr.splitlines()  # a query: nothing to retry
    assert error.startswith("error: DEADLINE_EXCEEDED: ")
    assert notes == [f"note: is the server running at {address}? (--server, $MMS_SERVER)"]
    # the retry the note asks for: applied once, whether or not the first one was
    retried = mms_json(address, *recharge, "--request-id", "till-9")
    assert retried["request_id"] == "till-9"
    assert retried["balances"]["principal_fen"] == 10_000
    assert retried["balances"]["bonus_fen"] == 1_000
    member = mms_json(address, "member", "show", "--id", str(member_id))
    assert member["balances"]["principal_fen"] == 10_000
    assert member["member"]["cumulative_recharge_fen"] == 10_000


# --- output, on one server with a merchant per test -----------------------------------


@dataclass(frozen=True)
class Merchant:
    """One merchant on a server. Runs `mms` in-process (cli.main, what the command runs,
    without a Python start per call), naming the merchant with --merchant."""

    address: str
    merchant_id: str
    capsys: pytest.CaptureFixture[str]

    def mms(self, *argv: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        full = [*argv, "--server", self.address, "--merchant", self.merchant_id]
        self.capsys.readouterr()
        with acting_as(self.address, self.merchant_id):
            code = cli.main(full)
        out, err = self.capsys.readouterr()
        assert code == expect, (argv, out, err)
        return subprocess.CompletedProcess(full, code, out, err)

    def json(self, *argv: str) -> dict[str, Any]:
        return json.loads(self.mms(*argv, "--json").stdout)

    def refused(self, *argv: str, status: str, reason: str) -> str:
        """Runs a command the server must refuse; returns stderr."""
        result = self.mms(*argv, expect=1)
        assert result.stdout == ""
        assert result.stderr.startswith(f"error: {status} {reason}: "), result.stderr
        return result.stderr


_MERCHANT_NUMBERS = itertools.count(1)


@pytest.fixture
def merchant(shared_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> Merchant:
    """A merchant of its own on the shared server, examples/merchant.toml applied."""
    chain = Merchant(shared_server.address, f"chain-{next(_MERCHANT_NUMBERS)}", capsys)
    chain.mms("config", "apply", str(EXAMPLE))
    # The example pays commission, so the staff its sales name are registered (an
    # unregistered code is refused: STAFF_NOT_FOUND).
    chain.mms("staff", "add", "A01", "店员 Clerk", "--role", "cashier", "--store", "S001")
    chain.mms("staff", "add", "T07", "技师 Stylist", "--role", "stylist")
    return chain


def test_merchant_option_picks_the_merchant(merchant: Merchant) -> None:
    register = ("member", "register", "--phone", PHONE, "--name", "张三", "--card", CARD)
    assert merchant.json(*register)["member"]["member_id"] == 1
    other = Merchant(merchant.address, merchant.merchant_id + "-b", merchant.capsys)
    refused(
        other.address, "member", "show", "--phone", PHONE, "--merchant", other.merchant_id,
        status="NOT_FOUND", reason="MEMBER_NOT_FOUND",
    )  # fmt: skip
    refused(
        other.address, "config", "show", "--merchant", other.merchant_id,
        status="FAILED_PRECONDITION", reason="MERCHANT_NOT_CONFIGURED",
    )  # fmt: skip
    assert other.json("config", "apply", str(EXAMPLE))["config"]["version"] == 1
    assert merchant.json("config", "show")["config"]["version"] == 1
    assert other.json(*register)["member"]["member_id"] == 1  # phone and card free
    merchant.mms("recharge", "--phone", PHONE, "--amount", "100")
    other.mms("recharge", "--phone", PHONE, "--amount", "500")
    mine = merchant.json("member", "show", "--card", CARD)
    assert mine["member"]["level_code"] == "regular"
    assert (mine["balances"]["principal_fen"], mine["balances"]["bonus_fen"]) == (
        10_000,
        1_000,
    )
    # --merchant before the command works the same
    theirs = mms_json(
        other.address, "--merchant", other.merchant_id, "member", "show", "--card", CARD
    )
    assert theirs["member"]["level_code"] == "silver"
    assert (theirs["balances"]["principal_fen"], theirs["balances"]["bonus_fen"]) == (
        50_000,
        8_000,
    )


def test_member_and_recharge_output(merchant: Merchant) -> None:
    text = merchant.mms(
        "member", "register", "--phone", PHONE, "--name", "张三", "--card", CARD
    ).stdout
    title, rows = fields(text)
    assert title == "Member registered 会员注册成功"
    assert rows["Member 会员"] == "#1 张三"
    assert (rows["Phone 手机"], rows["Card 卡号"]) == (PHONE, CARD)
    assert (rows["Level 等级"], rows["Store 门店"]) == ("regular", "S001")
    assert rows["Balance 余额"] == "0.00 (principal 本金 0.00 + bonus 赠送金 0.00)"
    assert re.fullmatch(r"[0-9a-f]{32}", rows["Request 请求号"])
    title, rows = fields(merchant.mms("recharge", "--phone", PHONE, "--amount", "100").stdout)
    assert title == "Recharge 充值"
    assert rows["Recharged 充值"] == "100.00 (cash 现金)"
    assert rows["Bonus 赠送"] == "10.00"
    assert rows["Balance 余额"] == "110.00 (principal 本金 100.00 + bonus 赠送金 10.00)"
    assert (rows["Level 等级"], rows["Ledger seq 流水号"]) == ("regular", "1")
    first_request_id = rows["Request 请求号"]
    assert re.fullmatch(r"[0-9a-f]{32}", first_request_id)
    # the same command again, without --request-id: a fresh id, applied again
    again = merchant.json("recharge", "--phone", PHONE, "--amount", "100")
    assert re.fullmatch(r"[0-9a-f]{32}", again["request_id"])
    assert again["request_id"] != first_request_id
    assert again["ledger_seq"] == 2
    assert again["balances"]["principal_fen"] == 20_000
    assert again["balances"]["bonus_fen"] == 2_000
    title, rows = fields(
        merchant.mms(
            "recharge", "--card", CARD, "--amount", "500", "--method", "bank_card",
            "--ref", "POS-77",
        ).stdout
    )  # fmt: skip
    assert rows["Recharged 充值"] == "500.00 (bank card 银行卡)"
    assert rows["Bonus 赠送"] == "80.00"
    assert rows["Level 等级"] == "regular → silver  ▲ upgraded 升级"
    merchant.mms("checkout", "--phone", PHONE, "--amount", "100")  # 5% off: 95.00
    details, cards = merchant.mms("member", "show", "--card", CARD).stdout.split("\n\n")
    assert table(cards) == [
        ["CARD", "TYPE", "STATUS", "PRINCIPAL", "BONUS", "USES LEFT"],
        [f"{CARD} (default 默认)", "member", "active 正常", "605.00", "100.00", "-"],
    ]
    title, rows = fields(details)
    assert title == "Member details 会员信息"
    assert rows["Member 会员"] == "#1 张三"
    assert rows["Level 等级"] == "silver 银卡 Silver"
    assert rows["Balance 余额"] == "705.00 (principal 本金 605.00 + bonus 赠送金 100.00)"
    assert rows["Points 积分"] == "114"  # 95 yuan at 1.2 points per yuan
    assert rows["Total spent 累计消费"] == "95.00"
    assert rows["Total recharged 累计充值"] == "700.00"
    shown = merchant.json("member", "show", "--id", "1")
    assert "request_id" not in shown  # a query has none
    assert shown["level_name"] == "银卡 Silver"
    member = shown["member"]
    assert (member["cumulative_spend_fen"], member["cumulative_spend"]) == (9_500, "95.00")
    assert member["cumulative_recharge_fen"] == 70_000
    assert shown["balances"] == {
        "principal_fen": 60_500,
        "principal": "605.00",
        "bonus_fen": 10_000,
        "bonus": "100.00",
        "points": 114,
        "uses": [],
    }


def test_checkout_output_with_points_balance_and_cash(merchant: Merchant) -> None:
    merchant.mms("member", "register", "--phone", PHONE, "--name", "张三", "--card", CARD)
    merchant.mms("recharge", "--card", CARD, "--amount", "500")  # silver, 500.00 + 80.00
    merchant.mms("checkout", "--card", CARD, "--amount", "100")  # 95.00, 114 points
    # 11000.00 less 5% is 10450.00; 114 points pay 1.14; the 10448.86 left is rounded
    # down to the jiao (抹零 0.06: the example's rounding = "jiao"), so 10449.94 is due;
    # the stored value 405.00 + 80.00 pays 485.00; cash pays the other 9963.80 of
    # 10000.00 handed over.
    checkout = (
        "checkout", "--phone", PHONE, "--amount", "11000", "--points", "114",
        "--pay", "balance+cash", "--cash-received", "10000", "--request-id", "till-7-0001",
    )  # fmt: skip
    data = merchant.json(*checkout)
    assert data["request_id"] == "till-7-0001"
    assert data["member_id"] == 1
    assert (data["list_amount_fen"], data["list_amount"]) == (1_100_000, "11000.00")
    assert (data["discount_bp"], data["discount_fen"], data["discount"]) == (
        500,
        55_000,
        "550.00",
    )
    assert (data["rounding_fen"], data["rounding"]) == (6, "0.06")
    assert (data["amount_due_fen"], data["amount_due"]) == (1_044_994, "10449.94")
    assert (data["points_redeemed"], data["points_value_fen"]) == (114, 114)
    assert data["payments"] == [
        {
            "method": "STORED_VALUE",
            "amount_fen": 48_500,
            "amount": "485.00",
            "cash_received_fen": 0,
            "cash_received": "0.00",
            "change_fen": 0,
            "change": "0.00",
            "external_ref": "",
            "principal_fen": 40_500,
            "principal": "405.00",
            "bonus_fen": 8_000,
            "bonus": "80.00",
            "member_id": 1,
            "card_no": "C0001",
        },
        {
            "method": "CASH",
            "amount_fen": 996_380,
            "amount": "9963.80",
            "cash_received_fen": 1_000_000,
            "cash_received": "10000.00",
            "change_fen": 3_620,
            "change": "36.20",
            "external_ref": "",
            "principal_fen": 0,
            "principal": "0.00",
            "bonus_fen": 0,
            "bonus": "0.00",
            "member_id": 0,
            "card_no": "",
        },
    ]
    assert data["points_earned"] == 12_538  # 10448.80 yuan at silver's 1.2, rounded down
    assert data["balances"] == {
        "principal_fen": 0,
        "principal": "0.00",
        "bonus_fen": 0,
        "bonus": "0.00",
        "points": 12_538,
        "uses": [],
    }
    # spent 95.00 + 10450.00 reaches gold's 10000.00
    assert (data["level_before"], data["level_after"]) == ("silver", "gold")
    assert data["level_upgraded"] is True
    assert (data["ledger_seq"], data["store_code"]) == (3, "S001")
    # the same request id again: the first answer, now as text
    title, rows = fields(merchant.mms(*checkout).stdout)
    assert title == "Checkout 消费"
    del rows["Time 时间"]
    assert rows == {
        "Member 会员": "#1",
        "Card 卡号": CARD,
        "List price 原价": "11000.00",
        "Discount 折扣": "550.00 (5%)",
        "Rounding 抹零": "0.06",
        "Amount due 应付": "10449.94",
        "Points used 积分抵现": "114 = 1.14",
        "Paid 支付 stored value 储值": "485.00 (principal 本金 405.00, bonus 赠送金 80.00)",
        "Paid 支付 cash 现金": "9963.80 (received 实收 10000.00, change 找零 36.20)",
        "Points earned 获得积分": "12538",
        "Balance 余额": "0.00 (principal 本金 0.00 + bonus 赠送金 0.00)",
        "Points 积分": "12538",
        "Level 等级": "silver → gold  ▲ upgraded 升级",
        "Ledger seq 流水号": "3",
        "Store 门店": "S001",
        "Request 请求号": "till-7-0001",
    }
    shown = merchant.json("member", "show", "--card", CARD)
    assert shown["member"]["level_code"] == "gold"
    assert shown["member"]["cumulative_spend_fen"] == 9_500 + 1_044_994  # once
    assert shown["balances"]["points"] == 12_538


def test_config_output(merchant: Merchant) -> None:
    text = merchant.mms("config", "apply", str(EXAMPLE)).stdout
    assert text.startswith("Config applied 配置已生效\n\nConfig 配置 version 2\n")
    data = merchant.json("config", "apply", str(EXAMPLE))
    assert re.fullmatch(r"[0-9a-f]{32}", data["request_id"])
    config = data["config"]
    assert config["version"] == 3
    assert config["spend_order"] == "PRINCIPAL_FIRST"
    assert config["points_redemption"] == {"points_per_yuan": 100, "max_share_bp": 5000}
    assert config["recharge_bonus_rules"][0] == {
        "min_recharge_fen": 10_000,
        "min_recharge": "100.00",
        "bonus_fen": 1_000,
        "bonus": "10.00",
    }
    summary, stores, levels, rules = merchant.mms("config", "show").stdout.split("\n\n")
    title, rows = fields(summary)
    assert title == "Config 配置 version 3"
    assert rows["Name 名称"] == "示例连锁 Demo Chain"
    assert rows["Spend order 扣款顺序"] == "principal first 本金优先"
    assert rows["Points 积分抵现"] == "100 points = ¥1, at most 50% of the amount due"

    assert table(stores) == [
        ["CODE", "NAME", "REGION 大区"],
        ["S001", "总店 Head Store", "-"],
        ["S002", "东区店 East", "华东大区 East China"],
        ["S003", "西区店 West", "华西大区 West China"],
    ]
    assert table(levels)[2] == [
        "silver", "银卡 Silver", "5%", "1.2", "2000.00", "1000.00", "500.00"
    ]  # fmt: skip
    assert table(levels)[1][4:] == ["-", "-", "-"]  # regular: no thresholds
    assert table(rules) == [
        ["RECHARGE>=", "BONUS"],
        ["100.00", "10.00"],
        ["500.00", "80.00"],
        ["1000.00", "200.00"],
    ]
    shown = merchant.json("config", "show")
    assert "request_id" not in shown
    assert shown["config"] == config


def test_a_request_too_big_to_send(merchant: Merchant) -> None:
    """An error with no reason and a code that is not about reaching the server: exit 1,
    one line, no note (a query has nothing to retry)."""
    phone = "1" * (cli.MESSAGE_BYTES_MAX + 1)  # more than an argv takes: in-process only
    result = merchant.mms("member", "show", "--phone", phone, expect=1)
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: RESOURCE_EXHAUSTED: ")
    assert "larger than max" in line


# --- cards, packages and profiles (issue 3) --------------------------------------------
# examples/merchant.toml: members get a "member" card (补卡 20.00, 退卡 5.00); "vip" is
# sold at S001 for 200.00, 12% off, with a PIN; cut10 is 10 haircuts for 500.00.


def local_date(at_ms: int) -> datetime.date:
    """The merchant's date (China Standard Time) at a server time."""
    moment = datetime.datetime.fromtimestamp(at_ms / 1000, datetime.UTC)
    return (moment + datetime.timedelta(hours=8)).date()


def test_card_issue_loss_and_unloss_output(
    merchant: Merchant, monkeypatch: pytest.MonkeyPatch
) -> None:
    merchant.mms("member", "register", "--phone", PHONE, "--name", "张三", "--card", CARD)
    merchant.mms("recharge", "--card", CARD, "--amount", "100")  # 100.00 + 10.00
    monkeypatch.setenv("MMS_PIN", "135790")  # a vip card is sold with its PIN
    sell = (
        "card", "issue", "--phone", PHONE, "--number", "VIP0001", "--type", "vip",
        "--pin", "--staff", "A01", "--request-id", "sell-1",
    )  # fmt: skip
    title, rows = fields(merchant.mms(*sell).stdout)
    assert title == "Card issued 售卡"
    assert rows.pop("Issued 售卡") == rows.pop("Time 时间")
    assert rows == {
        "Card 卡号": "VIP0001",
        "Member 会员": "#1",
        "Type 卡类型": "vip",
        "Status 状态": "inactive 未激活",
        "Balance 余额": "0.00 (principal 本金 0.00 + bonus 赠送金 0.00)",
        "PIN 密码": "set 已设置",
        "Activated 激活": "-",
        "Event 操作": "ISSUE 售卡: - → inactive 未激活",
        "Fee 费用": "200.00",
        "Paid 支付 cash 现金": "200.00",
        "Ledger seq 流水号": "2",
        "Request 请求号": "sell-1",
    }
    data = merchant.json(*sell)  # the same request again: its first answer, as JSON
    assert (data["request_id"], data["fee_fen"], data["fee"]) == ("sell-1", 20_000, "200.00")
    assert (data["card"]["card_no"], data["card"]["status"]) == ("VIP0001", "INACTIVE")
    assert [(p["method"], p["amount_fen"]) for p in data["payments"]] == [("CASH", 20_000)]
    assert (data["event"]["action"], data["event"]["staff_code"]) == ("ISSUE", "A01")
    shown = merchant.json("member", "show", "--phone", PHONE)
    assert (shown["balances"]["principal_fen"], shown["balances"]["bonus_fen"]) == (10_000, 1_000)
    assert [card["card_no"] for card in shown["cards"]] == [CARD, "VIP0001"]
    lost = merchant.mms("card", "loss", CARD, "--note", "顾客挂失", "--staff", "A01").stdout
    title, rows = fields(lost)
    assert (title, rows["Status 状态"]) == ("Card reported lost 挂失", "lost 挂失")
    assert rows["Event 操作"] == "REPORT_LOSS 挂失: active 正常 → lost 挂失 (顾客挂失)"
    assert rows["Balance 余额"] == "110.00 (principal 本金 100.00 + bonus 赠送金 10.00)"
    assert "Ledger seq 流水号" not in rows  # no money moved
    lost_card = {"status": "FAILED_PRECONDITION", "reason": "CARD_LOST"}
    merchant.refused("checkout", "--card", CARD, "--amount", "1", **lost_card)
    merchant.refused("recharge", "--phone", PHONE, "--amount", "1", **lost_card)
    merchant.refused("member", "code", "--phone", PHONE, **lost_card)  # it would only be refused
    title, rows = fields(merchant.mms("card", "unloss", CARD).stdout)
    assert (title, rows["Status 状态"]) == ("Loss cancelled 解挂", "active 正常")
    code = merchant.mms("member", "code", "--phone", PHONE)
    payload = code.stdout.strip()
    assert payload.startswith(f"MMS2.{CARD}.") and code.stdout == payload + "\n"
    assert code.stderr.startswith(f"member code 会员码 of card {CARD}, valid until ")
    assert merchant.json("member", "code", "--card", CARD)["card_no"] == CARD
    _, cards = merchant.mms("member", "show", "--qr", payload).stdout.split("\n\n")
    assert table(cards)[1:] == [
        [f"{CARD} (default 默认)", "member", "active 正常", "100.00", "10.00", "-"],
        ["VIP0001", "vip", "inactive 未激活", "0.00", "0.00", "-"],
    ]
    events = table(merchant.mms("card", "events", CARD).stdout)
    assert events[0] == ["SEQ", "TIME", "ACTION", "STAFF", "LEDGER", "REQUEST"]
    assert [(row[2], row[3]) for row in events[1:]] == [
        # Who cancelled the loss: the staff member of the token (the merchant's admin).
        ("CANCEL_LOSS 解挂: lost 挂失 → active 正常", "admin"),
        ("REPORT_LOSS 挂失: active 正常 → lost 挂失 (顾客挂失)", "A01"),
        ("ISSUE 售卡: - → active 正常 (issued with the registration, no fee)", "-"),
    ]
    assert merchant.json("checkout", "--card", CARD, "--amount", "1")["card_no"] == CARD


def test_card_replace_and_return_output(merchant: Merchant) -> None:
    merchant.mms("member", "register", "--phone", PHONE, "--name", "张三", "--card", CARD)
    merchant.mms("recharge", "--card", CARD, "--amount", "100")  # 100.00 + 10.00
    merchant.mms("checkout", "--card", CARD, "--amount", "30")  # principal first: 70.00 left
    replace = (
        "card", "replace", CARD, "--new-number", "C0009", "--pay", "scan_pay", "--ref", "WX-9",
    )  # fmt: skip
    title, rows = fields(merchant.mms(*replace).stdout)
    assert title == "Card replaced 换卡"
    assert (rows["Card 卡号"], rows["Status 状态"]) == ("C0009", "active 正常")
    assert rows["Balance 余额"] == "80.00 (principal 本金 70.00 + bonus 赠送金 10.00)"
    assert rows["Old card 原卡"] == f"{CARD} (replaced 已换卡)"
    assert rows["Event 操作"] == f"REPLACE 换卡: - → active 正常 (replaces {CARD})"
    assert (rows["Fee 费用"], rows["Paid 支付 scan pay 扫码"]) == ("20.00", "20.00 (ref WX-9)")
    assert rows["Ledger seq 流水号"] == "3"
    merchant.refused(
        "checkout", "--card", CARD, "--amount", "1",
        status="FAILED_PRECONDITION", reason="CARD_REPLACED",
    )  # fmt: skip
    old = merchant.json("card", "show", CARD)["card"]
    assert (old["status"], old["principal_fen"], old["bonus_fen"]) == ("REPLACED", 0, 0)
    returning = ("card", "return", "C0009", "--refund", "cash", "--request-id", "ret-1")
    data = merchant.json(*returning)
    assert (data["fee_fen"], data["refund_fen"], data["forfeited_bonus_fen"]) == (500, 6_500, 1_000)
    assert (data["refund"], data["forfeited_bonus"]) == ("65.00", "10.00")
    assert [(p["method"], p["amount_fen"]) for p in data["payments"]] == [("CASH", 6_500)]
    assert data["card"]["status"] == "CLOSED"
    title, rows = fields(merchant.mms(*returning).stdout)  # the same request: its first answer
    assert title == "Card returned 退卡"
    assert rows["Status 状态"] == "closed 已退卡"
    assert rows["Balance 余额"] == "0.00 (principal 本金 0.00 + bonus 赠送金 0.00)"
    assert rows["Fee 费用"] == "5.00"
    assert rows["Refunded 退款 cash 现金"] == "65.00"
    assert rows["Bonus forfeited 赠送金作废"] == "10.00"
    assert rows["Request 请求号"] == "ret-1"
    merchant.refused(
        "checkout", "--card", "C0009", "--amount", "1",
        status="FAILED_PRECONDITION", reason="CARD_CLOSED",
    )  # fmt: skip
    history = table(merchant.mms("member", "history", "--phone", PHONE).stdout)
    assert history[0] == ["SEQ", "TIME", "KIND", "STORE", "CARD", "AMOUNT", "BY", "REQUEST"]
    assert [(row[0], row[2], row[4], row[5]) for row in history[1:]] == [
        ("4", "CARD_RETURN 退卡", "C0009", "65.00"),
        ("3", "CARD_REPLACE 换卡", "C0009", "20.00"),
        ("2", "CHECKOUT 消费", CARD, "30.00"),
        ("1", "RECHARGE 充值", CARD, "100.00"),
    ]


def test_attached_card_issue_limit_and_return(
    merchant: Merchant, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = "13900139000"
    merchant.mms("member", "register", "--phone", PHONE, "--name", "张三", "--card", CARD)
    merchant.mms("member", "register", "--phone", other, "--name", "李四", "--card", "C0002")
    monkeypatch.setenv("MMS_PIN", "135790")  # the PINs of the VIP card and the linked one
    merchant.mms(
        "card", "issue", "--phone", PHONE, "--number", "VIP0001", "--type", "vip",
        "--activate", "--pin",
    )  # fmt: skip
    merchant.mms("recharge", "--card", "VIP0001", "--amount", "100")  # 100.00 + 10.00
    attach = (
        "card", "issue", "--phone", other, "--number", "L0001", "--type", "member",
        "--primary", "VIP0001", "--link", "linked", "--limit", "50", "--activate", "--pin",
    )  # fmt: skip
    denied = {"status": "FAILED_PRECONDITION", "reason": "PIN_REQUIRED"}
    merchant.refused(*attach, **denied)  # the VIP card's holder gives its PIN
    monkeypatch.setenv("MMS_PRIMARY_PIN", "135790")
    title, rows = fields(merchant.mms(*attach, "--primary-pin").stdout)
    assert title == "Card issued 售卡"
    assert rows["Attached to 主卡"] == "VIP0001 (关联卡: pays from it)"
    assert (rows["Limit 限额"], rows["Fee 费用"]) == ("50.00 (spent 已用 0.00)", "10.00")
    _, rows = fields(merchant.mms("card", "show", "VIP0001").stdout)
    assert rows["Attached 附卡 L0001"] == (
        "关联卡 of member #2, active 正常, limit 限额 50.00 (spent 已用 0.00)"
    )
    _, cards = merchant.mms("member", "show", "--phone", other).stdout.split("\n\n")
    assert table(cards)[2][:3] == ["L0001", "member (关联卡)", "active 正常"]
    # balance+cash: stored value up to what the limit leaves, cash for the rest
    checkout = ("checkout", "--card", "L0001", "--amount", "80", "--pay", "balance+cash")
    paid = merchant.json(*checkout, "--pin")
    assert [(p["method"], p["amount_fen"]) for p in paid["payments"]] == [
        ("STORED_VALUE", 5_000),
        ("CASH", 3_000),
    ]
    limit = ("card", "limit", "L0001", "--limit", "80", "--reset-spent", "--staff", "M01")
    monkeypatch.delenv("MMS_PRIMARY_PIN")
    merchant.refused(*limit, **denied)
    monkeypatch.setenv("MMS_PRIMARY_PIN", "135790")
    title, rows = fields(merchant.mms(*limit, "--primary-pin").stdout)
    assert (title, rows["Limit 限额"]) == ("Spending limit set 限额", "80.00 (spent 已用 0.00)")
    assert rows["Event 操作"] == (
        "SET_LIMIT 限额: active 正常 → active 正常 (limit 5000 fen → 8000 fen, spent 5000 → 0 fen)"
    )
    # 退卡 of the linked card detaches it: nothing refunded, no refund method or PIN
    title, rows = fields(merchant.mms("card", "return", "L0001").stdout)
    assert (title, rows["Status 状态"]) == ("Card returned 退卡", "closed 已退卡")
    assert "Ledger seq 流水号" not in rows
    events = table(merchant.mms("card", "events", "VIP0001").stdout)
    assert [row[2].split(":")[0] for row in events[1:]] == [
        "DETACH 附卡解除",
        "SET_LIMIT 限额",
        "ATTACH 附卡关联",
        "ISSUE 售卡",
    ]
    # a lost VIP card: its packages refunded, then the card returned, each with its PIN
    bought = merchant.json("package", "buy", "VIP0001", "--package", "cut10", "--pay", "cash")
    merchant.mms("card", "loss", "VIP0001")
    refund = ("package", "refund", "VIP0001", "--lot", str(bought["lot"]["lot_id"]))
    merchant.refused(*refund, "--refund", "cash", **denied)
    assert merchant.json(*refund, "--refund", "cash", "--pin")["refund_fen"] == 50_000
    merchant.refused(
        "card", "return", "VIP0001", "--pin",
        status="INVALID_ARGUMENT", reason="PAYMENT_METHOD_INVALID",
    )  # fmt: skip  # a card of its own: how the refund is paid is always named
    merchant.refused("card", "return", "VIP0001", "--refund", "cash", **denied)
    returned = merchant.json("card", "return", "VIP0001", "--refund", "cash", "--pin")
    assert (returned["refund_fen"], returned["forfeited_bonus_fen"]) == (5_000, 1_000)


def test_package_buy_then_checkout_with_uses(merchant: Merchant) -> None:
    merchant.mms("member", "register", "--phone", PHONE, "--name", "张三", "--card", CARD)
    merchant.mms("recharge", "--card", CARD, "--amount", "1000")  # + 200.00; silver, 5% off
    bought = merchant.json("package", "buy", CARD, "--package", "cut10")  # from the balance
    (payment,) = bought["payments"]
    assert (payment["method"], payment["principal_fen"], payment["bonus_fen"]) == (
        "STORED_VALUE", 50_000, 0,
    )  # fmt: skip
    lot = bought["lot"]
    assert (lot["lot_id"], lot["price_fen"], lot["price"], lot["uses_total"]) == (
        1, 50_000, "500.00", 10,
    )  # fmt: skip
    last_day = local_date(bought["event"]["at_ms"]) + datetime.timedelta(days=364)
    assert lot["expires_on"] == last_day.isoformat()  # valid_days = 365
    assert (bought["card"]["principal_fen"], bought["card"]["bonus_fen"]) == (50_000, 20_000)
    title, rows = fields(merchant.mms("card", "show", CARD).stdout)
    assert title == "Card 会员卡"
    assert rows["Package 套餐 #1"] == (
        f"cut10 500.00: haircut 10/10 left 剩余; until 有效期至 {last_day.isoformat()}"
    )
    assert "Request 请求号" not in rows  # a query
    visit = ("checkout", "--card", CARD, "--amount", "0", "--use", "haircut=2", "--staff", "T07")
    title, rows = fields(merchant.mms(*visit).stdout)
    assert title == "Checkout 消费"
    del rows["Time 时间"], rows["Request 请求号"]
    assert rows == {
        "Member 会员": "#1",
        "Card 卡号": CARD,
        "List price 原价": "0.00",
        "Discount 折扣": "0.00 (5%)",
        "Amount due 应付": "0.00",
        "Used 次卡消费 haircut": "2 (package 套餐 #1, 8 left 剩余)",
        "Points earned 获得积分": "0",
        "Balance 余额": "700.00 (principal 本金 500.00 + bonus 赠送金 200.00)",
        "Points 积分": "0",
        "Uses left 次卡剩余": "haircut 8",
        "Level 等级": "silver",
        "Ledger seq 流水号": "3",
        "Store 门店": "S001",
    }
    data = merchant.json("checkout", "--card", CARD, "--amount", "30", "--use", "haircut=1")
    assert (data["amount_due_fen"], data["payments"][0]["principal_fen"]) == (2_850, 2_850)
    assert data["lot_uses"] == [{"lot_id": 1, "item_code": "haircut", "uses": 1, "uses_left": 7}]
    assert data["balances"]["uses"] == [{"item_code": "haircut", "uses_left": 7}]
    title, rows = fields(merchant.mms("member", "show", "--card", CARD).stdout.split("\n\n")[0])
    assert (title, rows["Uses left 次卡剩余"]) == ("Member details 会员信息", "haircut 7")
    recharged = merchant.mms("recharge", "--card", CARD, "--amount", "1")
    assert fields(recharged.stdout)[1]["Uses left 次卡剩余"] == "haircut 7"
    # 3 of 10 used: 500.00 - floor(500.00 × 3 / 10) = 350.00 back onto the principal
    refund = merchant.json("package", "refund", CARD, "--lot", "1", "--refund", "balance")
    assert (refund["refund_fen"], refund["refund"], refund["lot"]["refunded"]) == (
        35_000, "350.00", True,
    )  # fmt: skip
    title, rows = fields(merchant.mms("card", "show", CARD).stdout)
    assert not [label for label in rows if label.startswith("Package")]
    assert rows["Balance 余额"] == "1022.50 (principal 本金 822.50 + bonus 赠送金 200.00)"
    _title, rows = fields(merchant.mms("member", "show", "--card", CARD).stdout.split("\n\n")[0])
    assert "Uses left 次卡剩余" not in rows  # none left: no row
    merchant.refused(
        "checkout", "--card", CARD, "--amount", "0", "--use", "haircut=1",
        status="FAILED_PRECONDITION", reason="INSUFFICIENT_USES",
    )  # fmt: skip


def _next_page(text: str) -> str:
    last = text.rstrip("\n").splitlines()[-1]
    assert last.startswith("  next page 下一页: --page-token "), text
    return last.rsplit(" ", 1)[1]


def test_member_update_search_history_and_follow_ups(merchant: Merchant) -> None:
    merchant.mms(
        "member", "register", "--phone", PHONE, "--name", "王一", "--card", CARD,
        "--gender", "female", "--tags", "vip", "--staff", "S01",
    )  # fmt: skip
    merchant.mms("member", "register", "--phone", "13800138001", "--name", "王二")
    merchant.mms("member", "register", "--phone", "13900139002", "--name", "李四")
    update = merchant.mms(
        "member", "update", "--phone", PHONE, "--name", "王小一", "--birthday=--05-20",
        "--tags", "vip,新客", "--attr", "skin=干性 dry", "--staff", "S02",
    ).stdout  # fmt: skip
    details, changes = update.split("\n\n")
    title, rows = fields(details)
    assert (title, rows["Member 会员"]) == ("Member updated 资料已更新", "#1 王小一")
    assert (rows["Gender 性别"], rows["Birthday 生日"]) == ("female 女", "--05-20")
    assert (rows["Tags 标签"], rows["Attributes 属性"]) == ("vip, 新客", "skin=干性 dry")
    assert rows["Staff 员工"] == "S01"  # who registered; the change is the update's
    assert [row[1:] for row in table(changes)] == [
        ["FIELD", "BEFORE", "AFTER", "STAFF"],
        ["name", "王一", "王小一", "S02"],
        ["birthday", "-", "--05-20", "S02"],
        ["tags", "vip", "vip, 新客", "S02"],
        ["attributes.skin", "-", "干性 dry", "S02"],
    ]
    data = merchant.json(
        "member", "update", "--id", "1", "--attr", "skin=油性 oily", "--attr", "shoe_size=42",
        "--staff", "S03",
    )  # fmt: skip
    assert data["member"]["attributes"] == {"shoe_size": "42", "skin": "油性 oily"}
    assert [(c["field"], c["old_value"], c["new_value"]) for c in data["changes"]] == [
        ("attributes.shoe_size", "", "42"),
        ("attributes.skin", "干性 dry", "油性 oily"),
    ]
    # one attribute changes, the others stay
    data = merchant.json(
        "member", "update", "--id", "1", "--attr", "shoe_size=40", "--staff", "S03"
    )
    assert data["member"]["attributes"] == {"shoe_size": "40", "skin": "油性 oily"}
    assert [(c["field"], c["old_value"], c["new_value"]) for c in data["changes"]] == [
        ("attributes.shoe_size", "42", "40")
    ]
    merchant.refused(
        "member", "update", "--phone", PHONE, "--attr", "skin=greasy", "--staff", "S03",
        status="INVALID_ARGUMENT", reason="ATTRIBUTE_INVALID",
    )  # fmt: skip
    first = merchant.mms("member", "changes", "--phone", PHONE, "--page-size", "2").stdout
    assert [row[1] for row in table(first)[1:-1]] == ["attributes.shoe_size", "attributes.skin"]
    rest = merchant.mms("member", "changes", "--phone", PHONE, "--page-token", _next_page(first))
    assert [row[1] for row in table(rest.stdout)[1:]] == [
        "attributes.shoe_size", "attributes.skin", "tags", "birthday", "name",
    ]  # fmt: skip
    # search: names in code point order, 王二 (二 U+4E8C) before 王小一 (小 U+5C0F)
    page = merchant.mms("member", "search", "--name", "王", "--page-size", "1").stdout
    assert [row[:3] for row in table(page)[1:-1]] == [["2", "王二", "13800138001"]]
    page = merchant.mms("member", "search", "--name", "王", "--page-token", _next_page(page))
    assert [row[:4] for row in table(page.stdout)[1:]] == [["1", "王小一", PHONE, CARD]]
    found = merchant.json("member", "search", "--phone-prefix", "138001")
    assert [m["member_id"] for m in found["members"]] == [1, 2]
    assert found["next_page_token"] == ""
    # history, newest first
    merchant.mms("recharge", "--phone", PHONE, "--amount", "100")
    merchant.mms("checkout", "--phone", PHONE, "--amount", "10")
    page = merchant.mms("member", "history", "--phone", PHONE, "--page-size", "1").stdout
    assert [(row[0], row[2], row[5]) for row in table(page)[1:-1]] == [
        ("2", "CHECKOUT 消费", "10.00")
    ]
    page = merchant.mms("member", "history", "--phone", PHONE, "--page-token", _next_page(page))
    assert [(row[0], row[2], row[5]) for row in table(page.stdout)[1:]] == [
        ("1", "RECHARGE 充值", "100.00")
    ]
    # follow-ups (回访记录)
    added = merchant.mms(
        "member", "follow-up", "add", "--phone", PHONE, "--text", "回访：满意 satisfied",
        "--staff", "S01", "--request-id", "fu-1",
    ).stdout  # fmt: skip
    title, rows = fields(added)
    del rows["Time 时间"]
    assert (title, rows) == (
        "Follow-up added 回访已记录",
        {
            "Member 会员": "#1",
            "Seq 序号": "1",
            "Staff 员工": "S01",
            "Text 内容": "回访：满意 satisfied",
            "Request 请求号": "fu-1",
        },
    )
    merchant.mms(
        "member", "follow-up", "add", "--card", CARD, "--text", "second 第二次", "--staff", "S02"
    )
    listed = table(merchant.mms("member", "follow-up", "list", "--phone", PHONE).stdout)
    assert [(row[0], row[2], row[3]) for row in listed] == [
        ("SEQ", "STAFF", "TEXT"),
        ("2", "S02", "second 第二次"),
        ("1", "S01", "回访：满意 satisfied"),
    ]


def test_pins_come_from_stdin_or_the_environment(address: str, member_id: int) -> None:
    issued = mms(
        address, "card", "issue", "--phone", PHONE, "--number", "VIP0001", "--type", "vip",
        "--activate", "--pin-stdin", stdin="135790\n",
    ).stdout  # fmt: skip
    assert fields(issued)[1]["PIN 密码"] == "set 已设置"
    assert "135790" not in issued
    mms(address, "recharge", "--card", "VIP0001", "--amount", "100")
    checkout = ("checkout", "--card", "VIP0001", "--amount", "10")
    refused(address, *checkout, status="FAILED_PRECONDITION", reason="PIN_REQUIRED")
    wrong = mms(address, *checkout, "--pin-stdin", stdin="000000\n", expect=1)
    assert wrong.stderr.startswith("error: FAILED_PRECONDITION WRONG_PIN: ")
    paid = json.loads(mms(address, *checkout, "--pin-stdin", "--json", stdin="135790\n").stdout)
    assert (paid["discount_fen"], paid["amount_due_fen"]) == (120, 880)  # VIP 12% off
    assert paid["payments"][0]["principal_fen"] == 880
    changed = mms(
        address, "card", "pin", "VIP0001", "--old-pin-stdin", "--new-pin-stdin",
        stdin="135790\n246802\n",
    ).stdout  # fmt: skip
    assert fields(changed)[1]["Event 操作"] == "CHANGE_PIN 修改密码: active 正常 → active 正常"
    old = mms(address, *checkout, "--pin", env={"MMS_PIN": "135790"}, expect=1)
    assert old.stderr.startswith("error: FAILED_PRECONDITION WRONG_PIN: ")
    assert mms(address, *checkout, "--pin", env={"MMS_PIN": "246802"}).stdout.startswith(
        "Checkout 消费"
    )
    nowhere = mms(address, *checkout, "--pin", expect=2)  # no terminal, no $MMS_PIN
    assert "PIN 密码: no terminal to type it on; give --pin-stdin or $MMS_PIN" in nowhere.stderr
    card = mms_json(address, "card", "show", "VIP0001")["card"]
    assert card["principal_fen"] == 10_000 - 880 - 880


IMPORT_CSV = """手机号,姓名,卡号,性别,生日,标签,attr:skin
13800000001,王一,M0001,女,1990-05-20,vip;新客,干性 dry
13800000002,王二,,男,05-20,,
13800000003,,,,,,
12345,李四,,,,,
"""


def test_member_import(address: str, tmp_path: Path) -> None:
    rows = tmp_path / "members.csv"
    rows.write_text(IMPORT_CSV, encoding="utf-8")
    errors = tmp_path / "errors.csv"
    result = mms(address, "member", "import", str(rows), "--errors", str(errors), expect=1)
    summary, failed, hint = result.stdout.split("\n\n")
    assert hint.startswith("To retry the failed rows 重试失败行: importing this file again only")
    title, shown = fields(summary)
    del shown["Time 用时"]
    assert (title, shown) == (
        "Import 导入",
        {
            "File 文件": str(rows),
            "Encoding 编码": "UTF-8",
            "Rows 行数": "4",
            "Imported 成功": "2",
            "Failed 失败": "2",
        },
    )
    assert [row[:2] for row in table(failed)] == [
        ["ROW", "REASON"],
        ["4", "FIELD_MISSING"],
        ["5", "PHONE_MALFORMED"],
    ]
    assert "import: 4/4 rows (100%)" in result.stderr  # progress
    written = errors.read_text(encoding="utf-8-sig").splitlines()
    assert written[0] == "error_row,error_reason,error_message," + IMPORT_CSV.splitlines()[0]
    assert len(written) == 3
    assert written[1].startswith("4,FIELD_MISSING,") and written[1].endswith(",13800000003,,,,,,")
    member = mms_json(address, "member", "show", "--phone", "13800000001")
    assert (member["member"]["name"], member["member"]["card_no"]) == ("王一", "M0001")
    assert member["member"]["gender"] == "FEMALE"
    assert member["member"]["birthday"] == "1990-05-20"
    assert member["member"]["tags"] == ["vip", "新客"]
    assert member["member"]["attributes"] == {"skin": "干性 dry"}
    assert (
        mms_json(address, "member", "show", "--phone", "13800000002")["member"]["birthday"]
        == "--05-20"
    )
    # the same file again: its chunks answer their first results; nobody is added twice
    again = json.loads(mms(address, "member", "import", str(rows), "--json", expect=1).stdout)
    assert (again["rows"], again["imported"], again["already_imported"]) == (4, 0, 2)
    assert (again["failed"], again["failed_before"]) == (2, 0)  # both refused before sending
    assert again["reasons"] == {"FIELD_MISSING": 1, "PHONE_MALFORMED": 1}
    assert [(e["row_number"], e["reason"]) for e in again["errors"]] == [
        (4, "FIELD_MISSING"),
        (5, "PHONE_MALFORMED"),
    ]
    assert (again["errors_omitted"], again["request_id"]) == (0, None)
    assert again["encoding"] == "UTF-8"
    _, shown = fields(mms(address, "member", "import", str(rows), expect=1).stdout.split("\n\n")[0])
    assert (shown["Imported 成功"], shown["Already imported 此前已导入"]) == (
        "0",
        "2 (by an earlier run of this file)",
    )
    found = mms_json(address, "member", "search", "--phone-prefix", "138000000")
    assert [m["name"] for m in found["members"]] == ["王一", "王二"]
    good = tmp_path / "good.csv"
    good.write_text("phone,name\n13800000009,赵九\n", encoding="utf-8")
    mms(address, "member", "import", str(good), "--request-id", "imp-good")  # exit 0
    bad = tmp_path / "bad.csv"
    bad.write_text("phone,name,shoe\n13800000010,钱十,42\n", encoding="utf-8")
    result = mms(address, "member", "import", str(bad), expect=2)
    assert result.stdout == "" and result.stderr.startswith("error: unknown column(s) shoe")


def test_card_daily_run_walks_every_card_in_steps(merchant: Merchant) -> None:
    merchant.mms("member", "register", "--phone", PHONE, "--name", "张三", "--card", CARD)
    merchant.mms("member", "register", "--phone", "13900139000", "--name", "李四")
    # Three steps of one card each and a last empty look: nothing is due on day one.
    result = merchant.json("card", "daily-run", "--step", "1")
    assert (result["cards_seen"], result["expired"], result["annual_fees_charged"]) == (2, 0, 0)
    assert result["next_after_card_id"] == 0
    text = merchant.mms("card", "daily-run").stdout
    assert "Daily card run 日终处理" in text and "Cards seen 处理卡数" in text


def test_points_commands(merchant: Merchant) -> None:
    """mms points adjust | batches | expire, with examples/merchant.toml's points rules."""
    merchant.mms("member", "register", "--phone", PHONE, "--name", "张三", "--card", CARD)
    merchant.mms("recharge", "--phone", PHONE, "--amount", "100")
    merchant.mms("checkout", "--phone", PHONE, "--amount", "58.50", "--store", "S001")
    adjusted = merchant.json(
        "points", "adjust", "--phone", PHONE, "--points", "+20", "--reason", "生日 birthday",
        "--staff", "S01",
    )  # fmt: skip
    assert (adjusted["points"], adjusted["points_balance"]) == (20, 78)
    text = merchant.mms(
        "points", "adjust", "--phone", PHONE, "--points", "-8", "--reason", "兑换 gift",
        "--staff", "S01",
    ).stdout  # fmt: skip
    title, rows = fields(text)
    assert title == "Points adjusted 积分调整"
    assert (rows["Points 调整"], rows["Balance 积分余额"]) == ("-8", "70")
    merchant.refused(
        "points", "adjust", "--phone", PHONE, "--points", "-71", "--reason", "too many",
        "--staff", "S01", status="FAILED_PRECONDITION", reason="INSUFFICIENT_POINTS",
    )  # fmt: skip
    batches = table(merchant.mms("points", "batches", "--phone", PHONE).stdout)
    assert [row[3:5] for row in batches[1:]] == [["50", "58"], ["20", "20"]]
    assert batches[1][2] == batches[2][2] and batches[1][2].endswith("-12-31")
    expired = merchant.json("points", "expire", "--step", "1")
    assert (expired["batches_seen"], expired.get("points_expired", 0)) == (2, 0)
    history = merchant.json("member", "history", "--phone", PHONE)["items"]
    assert [(item["kind"], item.get("points", 0)) for item in history[:2]] == [
        ("POINTS_ADJUST", -8),
        ("POINTS_ADJUST", 20),
    ]
    assert history[0]["reason"] == "兑换 gift"
