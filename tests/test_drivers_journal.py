"""The bridge's journal: what survives a restart, written whole and private, never a PIN."""

from __future__ import annotations

import stat
from pathlib import Path

from drivers.journal import PENDING_FILE, RECEIPT_FILE, Journal, SettledRecord
from engine.proto import common_pb2, transaction_pb2


def test_a_pending_checkout_is_kept_without_its_pin(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state")
    request = transaction_pb2.CheckoutRequest(
        request_id="r-1",
        member=common_pb2.MemberRef(card_no="6200001234"),
        list_amount_fen=5_850,
        pin="123456",
    )
    journal.save_pending(request, "张*")
    path = tmp_path / "state" / PENDING_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert b"123456" not in path.read_bytes()
    loaded, name = Journal(tmp_path / "state").load_pending()
    assert name == "张*"
    assert loaded.request_id == "r-1" and loaded.list_amount_fen == 5_850 and loaded.pin == ""
    journal.clear_pending()
    assert journal.load_pending() is None


def test_the_last_settlement_round_trips_and_a_damaged_file_is_not_trusted(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    answer = transaction_pb2.CheckoutResponse(ledger_seq=42, amount_due_fen=5_265)
    journal.save_settled(SettledRecord("r-2", "李*", answer))
    assert Journal(tmp_path).load_settled() == SettledRecord("r-2", "李*", answer)
    (tmp_path / RECEIPT_FILE).write_text('{"request_id": "r-2", "response": "not base64!"}')
    assert journal.load_settled() is None
    (tmp_path / RECEIPT_FILE).write_text("[1, 2")
    assert journal.load_settled() is None


def test_without_a_folder_nothing_is_written(tmp_path: Path) -> None:
    journal = Journal(None)
    journal.save_pending(transaction_pb2.CheckoutRequest(request_id="r"), "")
    assert journal.load_pending() is None
    assert list(tmp_path.iterdir()) == []
