"""The receipt (小票): what a settlement prints, as plain data, and its ESC/POS bytes.

`receipt_from_checkout` is the one place that reads a CheckoutResponse: every figure on
the receipt is the engine's, none is computed here (the bridge does no arithmetic on
money). When the checkout answer grows itemized lines, this function is what changes;
the layout and the printer do not.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from drivers import escpos
from drivers.card_reader import mask_card_no
from engine.money import format_fen, format_fixed_point
from engine.proto import common_pb2, transaction_pb2

__all__ = [
    "Adjustment",
    "MemberPart",
    "PaymentLine",
    "Receipt",
    "ReceiptContext",
    "ReceiptLayout",
    "ReceiptLine",
    "itemized_lines",
    "mask_name",
    "receipt_from_checkout",
    "render_receipt",
]

QUICK_LINE_NAME = "消费 Sale"
COLUMNS_MIN = 24
COLUMNS_MAX = 64
_ONE_UNIT_MILLI = 1000
_NAME_STARS_MAX = 3
METHOD_LABELS = {
    common_pb2.STORED_VALUE: "储值 Stored value",
    common_pb2.CASH: "现金 Cash",
    common_pb2.BANK_CARD: "银行卡 Bank card",
    common_pb2.SCAN_PAY: "扫码 Scan pay",
}
_log = logging.getLogger("mms.bridge.receipt")


@dataclass(frozen=True)
class ReceiptLine:
    name: str
    quantity_milli: int  # 1000 = one unit
    unit_price_fen: int
    amount_fen: int  # the line's list amount, before any discount


@dataclass(frozen=True)
class Adjustment:
    """A reduction of the bill (member discount, coupon, rounding), as a positive amount."""

    label: str
    amount_fen: int


@dataclass(frozen=True)
class PaymentLine:
    label: str
    amount_fen: int
    received_fen: int = 0  # cash handed over
    change_fen: int = 0
    reference: str = ""  # bank card or scan-pay reference


@dataclass(frozen=True)
class MemberPart:
    name_masked: str
    card_masked: str
    principal_fen: int
    bonus_fen: int
    points_earned: int
    points: int
    level: str
    level_before: str
    upgraded: bool
    uses: tuple[tuple[str, int, int], ...] = ()  # (item, used now, left)


@dataclass(frozen=True)
class Receipt:
    store: str
    terminal_id: str
    cashier: str
    time_text: str
    number: int  # the settlement's ledger seq
    request_id: str
    lines: tuple[ReceiptLine, ...]
    list_total_fen: int
    adjustments: tuple[Adjustment, ...]
    amount_due_fen: int
    payments: tuple[PaymentLine, ...]  # points first when points paid a part
    change_fen: int
    cash_paid: bool  # opens the drawer
    member: MemberPart | None
    reprint: bool = False


@dataclass(frozen=True)
class ReceiptContext:
    """What the receipt says that the checkout answer does not."""

    store_name: str
    terminal_id: str
    cashier: str
    timezone: ZoneInfo
    request_id: str
    member_name: str = ""
    level_names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReceiptLayout:
    columns: int = 32  # 58 mm paper; 48 on 80 mm
    encoding: str = "gb18030"
    cut: str = "partial"
    header: str = ""
    footer: str = "谢谢惠顾 Thank you"

    def check(self) -> None:
        if not COLUMNS_MIN <= self.columns <= COLUMNS_MAX:
            raise ValueError(f"columns {self.columns} is not in {COLUMNS_MIN}..{COLUMNS_MAX}")
        if self.cut not in escpos.CUT_MODES:
            raise ValueError(f"cut {self.cut!r} is not one of {escpos.CUT_MODES}")
        "".encode(self.encoding)  # LookupError for an unknown encoding


def mask_name(name: str) -> str:
    """What a customer display and a receipt show of a member's name: "张三" -> "张*"."""
    name = name.strip()
    if not name:
        return ""
    return name[0] + "*" * min(max(len(name) - 1, 1), _NAME_STARS_MAX)


def receipt_from_checkout(
    response: transaction_pb2.CheckoutResponse, context: ReceiptContext
) -> Receipt:
    """The receipt of one settlement, from the engine's answer and the terminal's context."""
    lines, adjustments = _bill(response)
    payments = _payments(response)
    change_fen = sum(payment.change_fen for payment in response.payments)
    paid_fen = sum(payment.amount_fen for payment in payments)
    if paid_fen != response.amount_due_fen:
        # The engine's figures are printed as they are; a disagreement is a bug to see.
        _log.error(
            "receipt %d: payments %d fen, amount due %d fen",
            response.ledger_seq,
            paid_fen,
            response.amount_due_fen,
        )
    moment = datetime.datetime.fromtimestamp(response.at_ms // 1000, context.timezone)
    return Receipt(
        store=context.store_name,
        terminal_id=context.terminal_id,
        cashier=context.cashier,
        time_text=moment.strftime("%Y-%m-%d %H:%M:%S"),
        number=response.ledger_seq,
        request_id=context.request_id,
        lines=lines,
        list_total_fen=sum(line.amount_fen for line in lines),
        adjustments=adjustments,
        amount_due_fen=response.amount_due_fen,
        payments=payments,
        change_fen=change_fen,
        cash_paid=any(p.method == common_pb2.CASH and p.amount_fen > 0 for p in response.payments),
        member=_member_part(response, context) if response.member_id else None,
    )


def _bill(
    response: transaction_pb2.CheckoutResponse,
) -> tuple[tuple[ReceiptLine, ...], tuple[Adjustment, ...]]:
    """The bill's lines and reductions: itemized when the answer's lines name items, else
    the quick checkout's one amount and its reductions."""
    if any(line.sku for line in response.lines):
        return itemized_lines(response.lines)
    # A quick checkout (快速消费) answers one line without a SKU: its amount and steps.
    line = ReceiptLine(
        QUICK_LINE_NAME, _ONE_UNIT_MILLI, response.list_amount_fen, response.list_amount_fen
    )
    adjustments = []
    if response.discount_fen:
        percent = format_fixed_point(response.discount_bp, 2, trim=True)
        adjustments.append(Adjustment(f"会员折扣 Discount {percent}%", response.discount_fen))
    if response.coupon_fen:
        adjustments.append(Adjustment("优惠券 Coupons", response.coupon_fen))
    if response.rounding_fen:
        adjustments.append(Adjustment("抹零 Rounding", response.rounding_fen))
    return (line,), tuple(adjustments)


# The reductions a settled line carries, by field, in the order the engine applies them
# (docs/CHECKOUT.md); points are shown as a payment, from the answer's own fields.
_LINE_REDUCTIONS = (
    ("member_discount_fen", "会员优惠 Member discount"),
    ("coupon_fen", "优惠券 Coupons"),
    ("rounding_fen", "抹零 Rounding"),
)


def itemized_lines(
    settled: Iterable[Any],
) -> tuple[tuple[ReceiptLine, ...], tuple[Adjustment, ...]]:
    """Receipt lines and reduction rows from settled bill lines (the shape of
    records.proto SettledLine: name or sku, quantity_milli, unit_price_fen, list_fen and
    one field per reduction step)."""
    lines = []
    totals = dict.fromkeys((name for name, _ in _LINE_REDUCTIONS), 0)
    for line in settled:
        name = getattr(line, "name", "") or getattr(line, "sku", "") or QUICK_LINE_NAME
        lines.append(ReceiptLine(name, line.quantity_milli, line.unit_price_fen, line.list_fen))
        for field_name in totals:
            totals[field_name] += getattr(line, field_name, 0)
    adjustments = tuple(
        Adjustment(label, totals[name]) for name, label in _LINE_REDUCTIONS if totals[name]
    )
    return tuple(lines), adjustments


def _payments(response: transaction_pb2.CheckoutResponse) -> tuple[PaymentLine, ...]:
    rows = []
    if response.points_value_fen:
        rows.append(
            PaymentLine(f"积分抵现 Points {response.points_redeemed}", response.points_value_fen)
        )
    for payment in response.payments:
        rows.append(
            PaymentLine(
                METHOD_LABELS.get(payment.method, f"method {payment.method}"),
                payment.amount_fen,
                received_fen=payment.cash_received_fen,
                change_fen=payment.change_fen,
                reference=payment.external_ref,
            )
        )
    return tuple(rows)


def _member_part(response: transaction_pb2.CheckoutResponse, context: ReceiptContext) -> MemberPart:
    names = context.level_names
    return MemberPart(
        name_masked=mask_name(context.member_name),
        card_masked=mask_card_no(response.card_no) if response.card_no else "",
        principal_fen=response.balances.principal_fen,
        bonus_fen=response.balances.bonus_fen,
        points_earned=response.points_earned,
        points=response.balances.points,
        level=names.get(response.level_after, response.level_after),
        level_before=names.get(response.level_before, response.level_before),
        upgraded=response.level_upgraded,
        uses=tuple((use.item_code, use.uses, use.uses_left) for use in response.lot_uses),
    )


# --- layout ---------------------------------------------------------------------------


def render_receipt(receipt: Receipt, layout: ReceiptLayout) -> bytes:
    """The ESC/POS bytes of a receipt: Chinese mode on, text in the layout's code page,
    the paper cut at the end. The drawer pulse is separate (`escpos.drawer_pulse`)."""
    out = bytearray(escpos.initialize() + escpos.chinese_mode(True))
    out += _heading(receipt, layout)
    body: list[str] = []
    body += _heading_rows(receipt, layout.columns)
    body += _line_rows(receipt, layout.columns)
    body += _total_rows(receipt, layout.columns)
    body += _payment_rows(receipt, layout.columns)
    if receipt.member is not None:
        body += _member_rows(receipt.member, layout.columns)
    out += escpos.align(escpos.ALIGN_LEFT)
    out += _encode(body, layout.encoding)
    if layout.footer:
        out += escpos.align(escpos.ALIGN_CENTER) + _encode([layout.footer], layout.encoding)
    out += escpos.cut(layout.cut)
    return bytes(out)


def _heading(receipt: Receipt, layout: ReceiptLayout) -> bytes:
    out = bytearray(escpos.align(escpos.ALIGN_CENTER))
    if receipt.reprint:
        out += _encode(["** 重印 REPRINT **"], layout.encoding)
    out += escpos.size(2, 2) + escpos.bold(True)
    out += _encode([receipt.store], layout.encoding)
    out += escpos.size(1, 1) + escpos.bold(False)
    if layout.header:
        out += _encode([layout.header], layout.encoding)
    return bytes(out)


def _heading_rows(receipt: Receipt, columns: int) -> list[str]:
    rows = _row("终端 Terminal", receipt.terminal_id, columns)
    if receipt.cashier:
        rows += _row("收银员 Cashier", receipt.cashier, columns)
    rows += _row("时间 Time", receipt.time_text, columns)
    rows += _row("单号 No.", str(receipt.number), columns)
    rows.append(_rule(columns))
    if receipt.member is None:
        rows += _row("散客 Walk-in", "", columns)
    else:
        rows += _row("会员 Member", receipt.member.name_masked, columns)
        if receipt.member.card_masked:
            rows += _row("卡号 Card", receipt.member.card_masked, columns)
    rows.append(_rule(columns))
    return rows


def _line_rows(receipt: Receipt, columns: int) -> list[str]:
    rows: list[str] = []
    for line in receipt.lines:
        rows += _row(line.name, format_fen(line.amount_fen), columns)
        if line.quantity_milli != _ONE_UNIT_MILLI or line.unit_price_fen != line.amount_fen:
            quantity = format_fixed_point(line.quantity_milli, 3, trim=True)
            rows.append(f"  {quantity} x {format_fen(line.unit_price_fen)}")
    rows.append(_rule(columns))
    return rows


def _total_rows(receipt: Receipt, columns: int) -> list[str]:
    rows = _row("合计 Total", format_fen(receipt.list_total_fen), columns)
    for adjustment in receipt.adjustments:
        rows += _row(adjustment.label, "-" + format_fen(adjustment.amount_fen), columns)
    rows += _row("应付 Amount due", format_fen(receipt.amount_due_fen), columns)
    return rows


def _payment_rows(receipt: Receipt, columns: int) -> list[str]:
    rows: list[str] = []
    for payment in receipt.payments:
        rows += _row(payment.label, format_fen(payment.amount_fen), columns)
        if payment.received_fen:
            rows += _row("  实收 Received", format_fen(payment.received_fen), columns)
        if payment.reference:
            rows += _row("  参考号 Ref", payment.reference[-columns // 2 :], columns)
    if receipt.change_fen:
        rows += _row("找零 Change", format_fen(receipt.change_fen), columns)
    return rows


def _member_rows(member: MemberPart, columns: int) -> list[str]:
    rows = [_rule(columns)]
    rows += _row("储值余额 Balance", format_fen(member.principal_fen + member.bonus_fen), columns)
    rows += _row("  本金 Principal", format_fen(member.principal_fen), columns)
    rows += _row("  赠送 Bonus", format_fen(member.bonus_fen), columns)
    rows += _row("本次积分 Points earned", str(member.points_earned), columns)
    rows += _row("积分余额 Points", str(member.points), columns)
    rows += _row("等级 Level", member.level, columns)
    if member.upgraded:
        rows += _row("升级 Upgraded", f"{member.level_before} -> {member.level}", columns)
    for item, used, left in member.uses:
        rows += _row(f"次卡 {item}", f"-{used} (left {left})", columns)
    return rows


def _row(label: str, value: str, columns: int) -> list[str]:
    """`label` left and `value` right on one line, or on lines of their own when they do
    not fit: a figure is never cut (a name too long for the paper is wrapped)."""
    gap = columns - escpos.text_width(label) - escpos.text_width(value)
    if gap >= 1:
        return [label + " " * gap + value]
    rows = _wrap(label, columns)
    for part in _wrap(value, columns):
        rows.append(" " * (columns - escpos.text_width(part)) + part)
    return rows


def _wrap(text: str, columns: int) -> list[str]:
    """`text` in pieces of at most `columns` print columns, cut between characters."""
    pieces, piece, width = [], "", 0
    for char in text:
        char_width = escpos.text_width(char)
        if width + char_width > columns:
            pieces.append(piece)
            piece, width = "", 0
        piece += char
        width += char_width
    if piece:
        pieces.append(piece)
    return pieces


def _rule(columns: int) -> str:
    return "-" * columns


def _encode(rows: Sequence[str], encoding: str) -> bytes:
    return b"".join(row.encode(encoding, errors="replace") + escpos.LF for row in rows)
