"""The bridge's prompt: a cashier's line becomes a command, with `mms checkout`'s own
options and checks; a PIN comes from the next line of stdin, never from the line."""

from __future__ import annotations

import io

import pytest

from drivers.bridge import parse_command
from engine.proto import common_pb2


def test_blank_lines_are_nothing_and_unknown_words_are_invalid() -> None:
    assert parse_command("   \n") is None
    assert parse_command("sell 5").name == "invalid"
    assert parse_command("reprint now").name == "invalid"
    assert parse_command('checkout "unclosed').name == "invalid"


def test_total_and_member() -> None:
    assert parse_command("total 58.5").amount_fen == 5_850
    assert parse_command("total 58.555").name == "invalid"  # fen are the smallest unit
    assert parse_command("total").name == "invalid"
    command = parse_command("member --card VIP0001")
    assert command.member == common_pb2.MemberRef(card_no="VIP0001")
    assert parse_command("member").name == "invalid"


def test_checkout_takes_mms_checkout_options_and_a_fresh_request_id() -> None:
    first = parse_command("checkout --amount 58.5 --pay cash --cash-received 100")
    second = parse_command("checkout --amount 58.5 --pay cash --cash-received 100")
    assert first.name == "checkout"
    assert (first.args.amount, first.args.cash_received, first.args.pay) == (5_850, 10_000, "cash")
    assert first.args.request_id and first.args.request_id != second.args.request_id
    # Without --amount: the bill rung up at the counter, which the bridge's loop checks.
    bill = parse_command("checkout --pay cash")
    assert (bill.name, bill.args.amount) == ("checkout", None)
    assert parse_command("checkout --amount 5 --item D001").name == "invalid"
    assert parse_command("checkout --bill 1 --store S001").name == "invalid"  # not here
    assert parse_command("checkout --amount 1.001").name == "invalid"


def test_a_pin_is_read_from_the_next_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("123456\n"))
    command = parse_command("checkout --amount 10 --pin-stdin")
    assert (command.name, command.pin) == ("checkout", "123456")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert parse_command("checkout --amount 10 --pin-stdin").name == "invalid"
