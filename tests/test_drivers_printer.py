"""The receipt printer: a receipt's ESC/POS bytes decoded by the tests' own parser (text in
GB18030, Chinese mode, the cut, the drawer pulse), the paper status, and a printer on a
real serial line that runs out of paper and is unplugged."""

from __future__ import annotations

import dataclasses
import unicodedata
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from drivers import escpos
from drivers.link import SerialLink, SerialSettings
from drivers.printer import DrawerSettings, PrinterSettings, ReceiptPrinter
from drivers.receipt import (
    ReceiptContext,
    ReceiptLayout,
    itemized_lines,
    mask_name,
    receipt_from_checkout,
    render_receipt,
)
from engine.proto import common_pb2, records_pb2, transaction_pb2
from serial_devices import DeviceEnd, PtyPort, decode_escpos, split_receipts

PM = common_pb2.PaymentMethod
PAPER_OK = b"\x12"
PAPER_OUT = b"\x72"  # roll paper end sensor: bits 5 and 6
PAPER_NEAR_END = b"\x1e"


def checkout_answer() -> transaction_pb2.CheckoutResponse:
    """A settlement as the engine answers one: a gold member, 10% off, points and stored
    value and cash with change, a count-card use, an upgrade."""
    return transaction_pb2.CheckoutResponse(
        member_id=7,
        list_amount_fen=58_850,
        discount_bp=1000,
        discount_fen=5_885,
        amount_due_fen=52_965,
        points_redeemed=500,
        points_value_fen=500,
        payments=[
            common_pb2.Payment(
                method=PM.STORED_VALUE, amount_fen=40_000, principal_fen=35_000, bonus_fen=5_000
            ),
            common_pb2.Payment(
                method=PM.CASH, amount_fen=12_465, cash_received_fen=20_000, change_fen=7_535
            ),
        ],
        points_earned=794,
        balances=common_pb2.Balances(principal_fen=1_234_501, bonus_fen=9, points=10_294),
        level_before="silver",
        level_after="gold",
        level_upgraded=True,
        ledger_seq=4242,
        at_ms=1_767_225_600_000,  # 2026-01-01 08:00:00 in Shanghai
        store_code="S001",
        card_no="6200001234",
        lot_uses=[common_pb2.LotUse(lot_id=3, item_code="haircut", uses=1, uses_left=9)],
    )


def context(**overrides) -> ReceiptContext:
    fields = dict(
        store_name="总店 Head Store",
        terminal_id="T01",
        cashier="C007",
        timezone=ZoneInfo("Asia/Shanghai"),
        request_id="r-1",
        member_name="张三丰",
        level_names={"silver": "银卡 Silver", "gold": "金卡 Gold"},
    )
    fields.update(overrides)
    return ReceiptContext(**fields)


def columns_of(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in line)


def test_receipt_bytes_carry_every_figure_of_the_settlement() -> None:
    receipt = receipt_from_checkout(checkout_answer(), context())
    printout = decode_escpos(render_receipt(receipt, ReceiptLayout(columns=32)))
    assert printout.commands[:2] == [("init",), ("chinese_on",)]
    assert printout.commands[-1] == ("cut", "partial", 4)
    assert printout.named("drawer") == []  # the drawer opens on its own command
    assert "总店 Head Store" in printout.lines
    assert printout.value("终端 Terminal") == "T01"
    assert printout.value("收银员 Cashier") == "C007"
    assert printout.value("时间 Time") == "2026-01-01 08:00:00"
    assert printout.value("单号 No.") == "4242"
    assert printout.value("会员 Member") == "张**"
    assert printout.value("卡号 Card") == "******1234"
    assert printout.value("消费 Sale") == "588.50"
    assert printout.value("合计 Total") == "588.50"
    assert printout.value("会员折扣 Discount 10%") == "-58.85"
    assert printout.value("应付 Amount due") == "529.65"
    assert printout.value("积分抵现 Points 500") == "5.00"
    assert printout.value("储值 Stored value") == "400.00"
    assert printout.value("现金 Cash") == "124.65"
    assert printout.value("  实收 Received") == "200.00"
    assert printout.value("找零 Change") == "75.35"
    assert printout.value("储值余额 Balance") == "12345.10"
    assert printout.value("  本金 Principal") == "12345.01"
    assert printout.value("  赠送 Bonus") == "0.09"
    assert printout.value("本次积分 Points earned") == "794"
    assert printout.value("积分余额 Points") == "10294"
    assert printout.value("等级 Level") == "金卡 Gold"
    assert printout.value("升级 Upgraded") == "银卡 Silver -> 金卡 Gold"
    assert printout.value("次卡 haircut") == "-1 (left 9)"
    assert "谢谢惠顾 Thank you" in printout.lines
    assert all(columns_of(line) <= 32 for line in printout.lines)
    assert "6200001234" not in "\n".join(printout.lines)
    assert receipt.cash_paid


def test_a_walk_in_receipt_and_a_reprint() -> None:
    answer = transaction_pb2.CheckoutResponse(
        list_amount_fen=3_720,
        amount_due_fen=3_720,
        payments=[
            common_pb2.Payment(
                method=PM.CASH, amount_fen=3_720, cash_received_fen=5_000, change_fen=1_280
            )
        ],
        ledger_seq=9,
        at_ms=1_767_225_600_000,
    )
    receipt = receipt_from_checkout(answer, context(member_name=""))
    printout = decode_escpos(render_receipt(receipt, ReceiptLayout(columns=48, cut="full")))
    assert printout.value("散客 Walk-in") == ""
    assert printout.value("找零 Change") == "12.80"
    assert printout.commands[-1] == ("cut", "full", 4)
    with pytest.raises(AssertionError):
        printout.value("储值余额 Balance")
    again = decode_escpos(
        render_receipt(dataclasses.replace(receipt, reprint=True), ReceiptLayout())
    )
    assert "** 重印 REPRINT **" in again.lines
    assert again.value("单号 No.") == "9"


def test_a_figure_is_never_cut_on_narrow_paper() -> None:
    answer = checkout_answer()
    answer.balances.principal_fen = 99_999_999_999_999
    receipt = receipt_from_checkout(
        answer, context(level_names={"gold": "金卡 Gold 至尊黄金会员等级"})
    )
    printout = decode_escpos(render_receipt(receipt, ReceiptLayout(columns=24)))
    text = "\n".join(printout.lines)
    assert "999999999999.99" in text
    assert all(columns_of(line) <= 24 for line in printout.lines)


def test_itemized_lines_from_settled_bill_lines() -> None:
    settled = [
        records_pb2.SettledLine(
            name="洗剪吹 Cut",
            quantity_milli=2000,
            unit_price_fen=3_800,
            list_fen=7_600,
            member_discount_fen=760,
        ),
        records_pb2.SettledLine(
            sku="6901234567892",
            quantity_milli=1500,
            unit_price_fen=1_000,
            list_fen=1_500,
            coupon_fen=500,
            rounding_fen=1,
        ),
    ]
    lines, adjustments = itemized_lines(settled)
    assert [(line.name, line.quantity_milli, line.amount_fen) for line in lines] == [
        ("洗剪吹 Cut", 2000, 7_600),
        ("6901234567892", 1500, 1_500),
    ]
    assert [(a.label, a.amount_fen) for a in adjustments] == [
        ("会员优惠 Member discount", 760),
        ("优惠券 Coupons", 500),
        ("抹零 Rounding", 1),
    ]


def test_names_are_masked() -> None:
    assert mask_name("张三") == "张*"
    assert mask_name("欧阳娜娜") == "欧***"
    assert mask_name("Li") == "L*"
    assert mask_name("王") == "王*"
    assert mask_name("") == ""


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (PAPER_OK, escpos.PaperStatus.OK),
        (PAPER_NEAR_END, escpos.PaperStatus.NEAR_END),
        (PAPER_OUT, escpos.PaperStatus.OUT),
        (b"", escpos.PaperStatus.UNKNOWN),
        (b"\x10", escpos.PaperStatus.UNKNOWN),  # not a status byte (fixed bits wrong)
        (b"\x12\x12", escpos.PaperStatus.UNKNOWN),
    ],
)
def test_paper_status_replies(reply: bytes, status: str) -> None:
    assert escpos.paper_status(reply) == status


def test_drawer_pulse_over_a_loopback_port() -> None:
    link = SerialLink("printer", SerialSettings(port="loop://", read_timeout_s=1.0))
    printer = ReceiptPrinter(link, PrinterSettings(paper_check=False))
    result = printer.kick_drawer(DrawerSettings(pin=5, pulse_on_ms=120, pulse_off_ms=240))
    assert result.printed
    assert link.read(64) == b"\x1bp\x01\x3c\x78"  # ESC p 1 60 120: pin 5, 120 ms on, 240 off
    link.close()


def test_a_printer_that_never_answers_the_status_is_printed_to(tmp_path: Path) -> None:
    # loop:// sends the status request back as its own "reply": not a status byte.
    link = SerialLink("printer", SerialSettings(port="loop://", read_timeout_s=1.0))
    printer = ReceiptPrinter(link, PrinterSettings(paper_check=True, status_timeout_s=1.0))
    assert printer.print_receipt(b"\x1b@hello\n").printed
    assert printer.paper == escpos.PaperStatus.UNKNOWN
    assert link.read(64) == b"\x04\x04\x1b@hello\n"  # the request's tail, then the receipt
    link.close()


@pytest.fixture
def printer_line(tmp_path: Path):
    port = PtyPort(tmp_path / "printer")
    end = DeviceEnd(port, status_reply=PAPER_OK)
    yield port, end
    end.stop()
    port.close()


def test_printer_on_a_serial_line_out_of_paper_and_unplugged(printer_line) -> None:
    port, end = printer_line
    settings = SerialSettings(port=str(port.path), reconnect_interval_s=0.05, write_timeout_s=5.0)
    printer = ReceiptPrinter(SerialLink("printer", settings), PrinterSettings(status_timeout_s=5.0))
    receipt = render_receipt(receipt_from_checkout(checkout_answer(), context()), ReceiptLayout())

    assert printer.print_receipt(receipt).printed
    end.wait_for(b"\x1dVB\x04")
    printed = split_receipts(end.snapshot())
    assert len(printed) == 1
    assert decode_escpos(printed[0]).value("应付 Amount due") == "529.65"

    end.status_reply = PAPER_OUT
    mark = len(end.snapshot())
    result = printer.print_receipt(receipt)
    assert (result.printed, result.reason) == (False, "paper out")
    assert printer.kick_drawer(DrawerSettings()).printed  # cash still goes in the drawer
    end.wait_for(b"\x1bp\x00\x32\x64", mark)
    assert split_receipts(end.snapshot()[mark:]) == []  # nothing of the receipt went out

    end.status_reply = PAPER_OK
    port.unplug()
    result = printer.print_receipt(receipt)
    assert not result.printed and result.reason.startswith("printer missing")
    port.plug()
    mark = len(end.snapshot())
    assert printer.print_receipt(receipt).printed  # at once: no wait for the retry interval
    end.wait_for(b"\x1dVB\x04", mark)
    assert len(split_receipts(end.snapshot()[mark:])) == 1
    printer.link.close()
