"""`mms` end to end: the real command in a child process against a real server.

Every amount is asserted to the fen. Expected values follow examples/merchant.toml:
普通 Regular 0% off and 1 point per yuan, 银卡 Silver 5% off and 1.2 points per yuan
(reached by one recharge of ¥500), bonus 充100送10 / 充500送80 / 充1000送200, principal
spent first, points rounded down.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.config_file import load_config, loads_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "merchant.toml"
COMMAND_TIMEOUT_S = 60
PHONE = "13800138000"
CARD = "C0001"


def mms(address: str, *argv: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    """Runs `python -m engine ARGV --server ADDRESS` and checks its exit code."""
    result = subprocess.run(
        [sys.executable, "-m", "engine", *argv, "--server", address],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=COMMAND_TIMEOUT_S,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
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
    data = mms_json(
        server.address, "config", "apply", str(EXAMPLE), "--request-id", "cfg-1"
    )
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
    typo.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace("discount =", "discont =", 1)
    )
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
    mms(
        address, "member", "register", "--phone", "13900139000", expect=2
    )  # --name missing


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
    assert (
        checkout["points_earned"] == 58
    )  # 58.50 yuan at 1 point per yuan, rounded down
    assert checkout["balances"] == {
        "principal_fen": 4150,
        "principal": "41.50",
        "bonus_fen": 1000,
        "bonus": "10.00",
        "points": 58,
    }
    assert checkout["level_upgraded"] is False
    assert checkout["ledger_seq"] == recharge["ledger_seq"] + 1
    member = mms_json(address, "member", "show", "--id", str(member_id))["member"]
    assert member["cumulative_recharge_fen"] == 10_000
    assert member["cumulative_spend_fen"] == 5850


def test_recharge_upgrades_and_the_discount_applies(
    address: str, member_id: int
) -> None:
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


def test_retry_with_the_same_request_id_applies_once(
    address: str, member_id: int
) -> None:
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
        result = mms(
            address, "recharge", "--id", str(member_id), "--amount", amount, expect=2
        )
        assert "argument --amount:" in result.stderr


def test_checkout_refusals(address: str, member_id: int) -> None:
    mms(
        address, "recharge", "--id", str(member_id), "--amount", "10"
    )  # below every bonus rule
    stderr = refused(
        address, "checkout", "--id", str(member_id), "--amount", "58.50",
        status="FAILED_PRECONDITION", reason="INSUFFICIENT_BALANCE",
    )  # fmt: skip
    assert "retry" not in stderr  # a definite answer: nothing to retry
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
    assert data["path"] == str(destination / "data.mdb")
    assert data["size_bytes"] == (destination / "data.mdb").stat().st_size > 0
    mms(address, "db", "audit", str(destination))
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
