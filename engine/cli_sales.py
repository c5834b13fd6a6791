"""`mms` commands of itemized sales (issue 4): the catalog (`mms item`), stock
(`mms stock`), suspended bills (`mms bill`, 挂单), refunds (`mms refund`, 退货/撤单) and
settlements (`mms settlement`), and the bill lines and other members' payments (多人收款)
of `mms checkout`.

`engine.cli.build_parser` registers these with one call to `add_commands`; they live apart
from engine/cli.py so that command groups added in parallel merge without conflict.

Quantities are typed as people write them ("2", "1.5" kg, "0.35") and kept in thousandths
of a unit, parsed exactly like money (engine.money), never through a float.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from engine import cli
from engine.money import format_fen, format_fixed_point, parse_fixed_point
from engine.proto import (
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    records_pb2,
    transaction_pb2,
    transaction_pb2_grpc,
)

__all__ = [
    "ITEMS_PER_REQUEST",
    "add_checkout_options",
    "add_commands",
    "build_adjust_stock_request",
    "build_item",
    "build_refund_request",
    "build_suspend_request",
    "checkout_bill",
    "derived_request_id",
    "lines_text",
    "parse_quantity",
    "payer_tenders",
    "upsert_items",
]

QUANTITY_DECIMALS = 3  # thousandths of a unit (or of a kg)
MILLI_PER_UNIT = 1000
# The core's bound of items per UpsertItems request (catalog::ITEMS_PER_REQUEST_MAX).
ITEMS_PER_REQUEST = 1000
REQUEST_ID_CHARS_MAX = 64  # the core's bound (validate::REQUEST_ID_BYTES_MAX)
BILL_NO_MAX = 2**64 - 1
LINE_NO_MAX = 2**32 - 1
SEQ_MAX = 2**64 - 1
# `mms config show --toml --items`: pages of the largest size ListItems allows.
LIST_PAGE_SIZE_MAX = 500
LIST_PAGES_MAX = 10_000  # 5 million items: far above any chain's catalog
PAYER_KEYS = ("phone", "card", "id")

_KIND_LABELS = {
    catalog_pb2.ITEM_KIND_UNSPECIFIED: "goods 商品",
    catalog_pb2.GOODS: "goods 商品",
    catalog_pb2.SERVICE: "service 服务",
}
# `mms stock MOVE`: the move, the command's help and the title of its answer.
_STOCK_MOVES = {
    "in": (catalog_pb2.STOCK_IN, "goods received 入库", "Stock in 入库"),
    "out": (
        catalog_pb2.STOCK_OUT,
        "goods taken out: damaged, used in-house 出库",
        "Stock out 出库",
    ),
    "count": (
        catalog_pb2.STOCK_ADJUST,
        "the counted stock replaces the stock 盘点",
        "Stock counted 盘点",
    ),
    "transfer": (
        catalog_pb2.STOCK_TRANSFER,
        "move stock to another store 调拨",
        "Stock transferred 调拨",
    ),
}
# The pricing steps of a line, in pricing order, as table columns.
_STEP_COLUMNS = (
    ("member_discount_fen", "DISCOUNT"),
    ("coupon_fen", "COUPON"),
    ("points_fen", "POINTS"),
    ("rounding_fen", "ROUNDING"),
)


# --- argument types -------------------------------------------------------------------


def parse_quantity(text: str) -> int:
    """A quantity typed as people write it ("2", "1.5") in thousandths; more than zero."""
    try:
        milli = parse_fixed_point(text, QUANTITY_DECIMALS, what="quantity")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if milli == 0:
        raise argparse.ArgumentTypeError(f"quantity {text!r} must be more than zero")
    return milli


def _stock_quantity(text: str) -> int:
    """A counted stock (盘点) may be zero; a move may not (the core says so)."""
    try:
        return parse_fixed_point(text, QUANTITY_DECIMALS, what="quantity")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def quantity_text(milli: int) -> str:
    """Thousandths as people write them: 1500 -> "1.5", 2000 -> "2"."""
    return format_fixed_point(milli, QUANTITY_DECIMALS, trim=True)


def _bill_line(text: str, key: str) -> transaction_pb2.BillLine:
    """`CODE[=QTY][@PRICE]`: an item by SKU or barcode, its quantity (default 1) and, for
    an item priced at the counter, its unit price in yuan."""
    head, at, price = text.partition("@")
    code, equals, quantity = head.partition("=")
    code = code.strip()
    if not code:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not CODE[=QTY][@PRICE]")
    line = transaction_pb2.BillLine(quantity_milli=MILLI_PER_UNIT)
    setattr(line, key, code)
    if equals:
        line.quantity_milli = parse_quantity(quantity)
    if at:
        line.unit_price_fen = cli._positive_yuan(price)
    return line


def _item_line(text: str) -> transaction_pb2.BillLine:
    return _bill_line(text, "sku")


def _barcode_line(text: str) -> transaction_pb2.BillLine:
    return _bill_line(text, "barcode")


def _payer(text: str) -> tuple[common_pb2.MemberRef, int | None]:
    """`phone:P[=YUAN]`, `card:C[=YUAN]` or `id:N[=YUAN]`: another member whose stored value
    pays YUAN of the bill, or what their balance allows when YUAN is left out."""
    who, equals, amount = text.partition("=")
    key, colon, value = who.partition(":")
    key, value = key.strip(), value.strip()
    if not colon or key not in PAYER_KEYS or not value:
        raise argparse.ArgumentTypeError(
            f"{text[:40]!r} is not phone:P, card:C or id:N, optionally =YUAN"
        )
    if key == "phone":
        reference = common_pb2.MemberRef(phone=value)
    elif key == "card":
        reference = common_pb2.MemberRef(card_no=value)
    else:
        reference = common_pb2.MemberRef(member_id=cli._member_id(value))
    return reference, cli._positive_yuan(amount) if equals else None


def _refund_line(text: str) -> transaction_pb2.RefundLine:
    """`N=QTY`: QTY of line N of the checkout (its number on the receipt)."""
    line_no, quantity = cli._pair(text, "LINE=QTY")
    return transaction_pb2.RefundLine(
        line_no=cli._whole_number(line_no, "line", 1, LINE_NO_MAX),
        quantity_milli=parse_quantity(quantity),
    )


def _member_price(text: str) -> catalog_pb2.LevelPrice:
    level, price = cli._pair(text, "LEVEL=YUAN")
    return catalog_pb2.LevelPrice(level_code=level, price_fen=cli._yuan(price))


def _bill_no(text: str) -> int:
    return cli._whole_number(text, "bill number", 1, BILL_NO_MAX)


def _seq(text: str) -> int:
    return cli._whole_number(text, "ledger seq", 1, SEQ_MAX)


# --- the parser -----------------------------------------------------------------------


def add_line_options(parser: argparse.ArgumentParser) -> None:
    """--item and --barcode (in the order given: the receipt's order) and --price."""
    parser.add_argument(
        "--item", dest="lines", metavar="SKU[=QTY][@YUAN]", type=_item_line, action="append",
        help="a line of the bill by SKU 商品编码, repeatable; QTY like 2 or 1.5 (kg), "
        "default 1; @YUAN: the unit price of an item priced at the counter",
    )  # fmt: skip
    parser.add_argument(
        "--barcode", dest="lines", metavar="CODE[=QTY][@YUAN]", type=_barcode_line,
        action="append", help="a line of the bill by barcode 条码, as scanned, repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--price", metavar="YUAN", type=cli._positive_yuan,
        help="unit price of a one-line bill's item priced at the counter (现场定价); with "
        "several lines write it on its line: --item SKU=QTY@YUAN",
    )  # fmt: skip


def add_checkout_options(parser: argparse.ArgumentParser) -> None:
    """The options `mms checkout` takes for itemized bills, 挂单 and 多人收款."""
    add_line_options(parser)
    parser.add_argument(
        "--bill", metavar="N", type=_bill_no,
        help="settle suspended bill N 挂单 of --store (its lines and member, unless given "
        "here); the bill is removed by the same checkout",
    )  # fmt: skip
    parser.add_argument(
        "--payer", dest="payers", metavar="phone:P|card:C|id:N[=YUAN]", type=_payer,
        action="append",
        help="another member's stored value pays YUAN of the bill (多人收款), or what their "
        "balance allows without =YUAN; repeatable, applied before --pay",
    )  # fmt: skip


def add_commands(top: cli._Commands) -> None:
    """Registers mms item, stock, bill, refund and settlement."""
    _add_item(top)
    _add_stock(top)
    _add_bill(top)
    _add_refund(top)
    _add_settlement(top)


def _add_item(top: cli._Commands) -> None:
    commands = top.group("item", "the catalog: goods and service items 商品")
    add = commands.add(
        "add", _item_add, "add an item, or replace the item of the SKU 添加/修改商品", mutating=True
    )
    add.add_argument("--sku", metavar="SKU", type=cli._non_empty, required=True, help="商品编码")
    add.add_argument("--name", metavar="N", type=cli._non_empty, required=True, help="名称")
    add.add_argument(
        "--category", metavar="C", type=cli._non_empty, required=True, help="category code 分类"
    )
    add.add_argument(
        "--price", metavar="YUAN", type=cli._yuan, required=True,
        help="retail price 零售价 per unit (per kg for goods sold by weight); 0: priced at the "
        "counter",
    )  # fmt: skip
    add.add_argument(
        "--member-price", dest="member_prices", metavar="LEVEL=YUAN", type=_member_price,
        action="append", help="member price 会员价 of a level, repeatable",
    )  # fmt: skip
    add.add_argument("--barcode", metavar="CODE", default="", help="条码 (8-14 digits)")
    add.add_argument("--service", action="store_true", help="a service item 服务项目 (no stock)")
    add.add_argument(
        "--no-discount", action="store_true", help="不打折: no member price, discount nor coupon"
    )
    add.add_argument(
        "--track-stock", action="store_true", help="sales take it from the store's stock 管理库存"
    )
    add.add_argument("--inactive", action="store_true", help="停售: cannot be sold")
    show = commands.add("show", _item_show, "an item, and its stock at a store 查询商品")
    key = show.add_mutually_exclusive_group(required=True)
    key.add_argument("--sku", metavar="SKU", type=cli._non_empty, help="商品编码")
    key.add_argument("--barcode", metavar="CODE", type=cli._non_empty, help="条码")
    show.add_argument("--store", metavar="S", default="", help="show its stock at this store 库存")
    listing = commands.add("list", _item_list, "items by SKU 商品列表")
    listing.add_argument("--category", metavar="C", default="", help="only this category 分类")
    cli._add_page_options(listing)
    imports = commands.add("import", _item_import, "add or replace items from a CSV file 导入商品")
    imports.add_argument(
        "file", metavar="FILE.csv",
        help="CSV (UTF-8, or GBK as Chinese Excel saves it), a header row first: sku, name, "
        "category, price (required), kind, barcode, no_discount, track_stock, inactive, "
        "member_price:LEVEL",
    )  # fmt: skip
    imports.add_argument(
        "--request-id", metavar="R", type=cli._non_empty,
        help="prefix of the chunks' request ids (default: made from the file's contents, so "
        "importing the same file again changes nothing)",
    )  # fmt: skip
    imports.set_defaults(mutating=True, fresh_request_id=False)


def _add_stock(top: cli._Commands) -> None:
    commands = top.group("stock", "stock of goods per store 库存")
    for name, (_move, help_text, _title) in _STOCK_MOVES.items():
        parser = commands.add(name, _stock_move, help_text, mutating=True)
        parser.add_argument("--store", metavar="S", type=cli._non_empty, required=True, help="门店")
        parser.add_argument(
            "--sku", metavar="SKU", type=cli._non_empty, required=True, help="商品编码"
        )
        counted = name == "count"
        parser.add_argument(
            "--qty", dest="quantity", metavar="Q", required=True,
            type=_stock_quantity if counted else parse_quantity,
            help="the stock counted (0 or more)" if counted else "quantity moved, like 24 or 1.5",
        )  # fmt: skip
        if name == "transfer":
            parser.add_argument(
                "--to-store", metavar="T", type=cli._non_empty, required=True,
                help="the receiving store 调入门店",
            )  # fmt: skip
        parser.add_argument("--reason", metavar="TEXT", default="", help="why 原因")
        cli._add_staff_option(parser)
        parser.set_defaults(stock_move=name)


def _add_bill(top: cli._Commands) -> None:
    commands = top.group("bill", "suspended bills 挂单, resumed with mms checkout --bill N")
    suspend = commands.add("suspend", _bill_suspend, "put a bill aside 挂单", mutating=True)
    suspend.add_argument("--store", metavar="S", type=cli._non_empty, required=True, help="门店")
    suspend.add_argument(
        "--terminal", metavar="T", default="", help="the till it was put aside at 收银台"
    )
    cli._add_member_selector(suspend, required=False)
    add_line_options(suspend)
    suspend.add_argument(
        "--amount", metavar="YUAN", type=cli._positive_yuan,
        help="a quick bill's list price 原价, instead of lines",
    )  # fmt: skip
    suspend.add_argument("--note", metavar="TEXT", default="", help="备注")
    cli._add_staff_option(suspend)
    listing = commands.add("list", _bill_list, "the bills waiting at a store, oldest first")
    listing.add_argument("--store", metavar="S", type=cli._non_empty, required=True, help="门店")
    cancel = commands.add("cancel", _bill_cancel, "drop a suspended bill 取消挂单", mutating=True)
    cancel.add_argument("bill_no", metavar="N", type=_bill_no, help="the bill's number")
    cancel.add_argument("--store", metavar="S", type=cli._non_empty, required=True, help="门店")


def _add_refund(top: cli._Commands) -> None:
    parser = top.add(
        "refund",
        _refund,
        "refund a checkout, in part or whole 退货/撤单 (neither --line nor --amount: "
        "everything left)",
        mutating=True,
    )
    parser.add_argument("seq", metavar="SEQ", type=_seq, help="the checkout's ledger seq 流水号")
    parser.add_argument(
        "--line", dest="refund_lines", metavar="N=QTY", type=_refund_line, action="append",
        help="QTY of line N comes back (退货, goods back into stock), repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--amount", metavar="YUAN", type=cli._positive_yuan,
        help="this much of what was paid comes back, over every line (退差价)",
    )  # fmt: skip
    parser.add_argument(
        "--store", metavar="S", default="",
        help="store code 门店 where it is refunded (default: the checkout's)",
    )  # fmt: skip
    cli._add_staff_option(parser)
    parser.add_argument("--reason", metavar="TEXT", default="", help="why 原因")


def _add_settlement(top: cli._Commands) -> None:
    commands = top.group("settlement", "checkouts as settled 结算单")
    show = commands.add("show", _settlement_show, "a checkout: lines, payments, refunds 查询结算单")
    show.add_argument("seq", metavar="SEQ", type=_seq, help="the checkout's ledger seq 流水号")


# --- requests -------------------------------------------------------------------------


def bill_lines(args: argparse.Namespace) -> list[transaction_pb2.BillLine]:
    """The lines --item and --barcode give, --price on the one line it is for."""
    lines = [_copy(line) for line in args.lines or []]
    if args.price is None:
        return lines
    if len(lines) != 1:
        raise cli.UsageError(
            "--price is for a bill of one line; with several, write each price on its line: "
            "--item SKU=QTY@YUAN"
        )
    if lines[0].unit_price_fen:
        raise cli.UsageError("the price is given twice: --price and @YUAN")
    lines[0].unit_price_fen = args.price
    return lines


def _copy(line: transaction_pb2.BillLine) -> transaction_pb2.BillLine:
    copy = transaction_pb2.BillLine()
    copy.CopyFrom(line)
    return copy


class CheckoutBill:
    """What a checkout settles: its lines or list amount, the member, the staff."""

    def __init__(
        self,
        lines: list[transaction_pb2.BillLine],
        list_amount_fen: int,
        member: common_pb2.MemberRef | None,
        staff_code: str,
        bill_no: int,
    ) -> None:
        self.lines = lines
        self.list_amount_fen = list_amount_fen
        self.member = member
        self.staff_code = staff_code
        self.bill_no = bill_no


def checkout_bill(
    args: argparse.Namespace, bill: transaction_pb2.SuspendedBill | None = None
) -> CheckoutBill:
    """The bill of `mms checkout`: from the options, the suspended `bill` filling in what
    they leave out. Raises UsageError for options that clash."""
    lines = bill_lines(args)
    if lines and args.amount is not None:
        raise cli.UsageError("give --amount or the bill's lines (--item, --barcode), not both")
    if args.bill is not None and bill is None:
        raise cli.UsageError(f"--bill {args.bill}: the suspended bill is not at hand here")
    member = cli.member_ref(args)
    staff_code = args.staff
    amount_fen = args.amount or 0
    if bill is not None:
        if not lines and args.amount is None:
            lines = list(bill.lines)
            amount_fen = bill.list_amount_fen
        if member is None and bill.HasField("member"):
            member = bill.member
        staff_code = staff_code or bill.staff_code
    elif not lines and args.amount is None:
        raise cli.UsageError("give --amount, the bill's lines (--item, --barcode) or --bill N")
    return CheckoutBill(lines, amount_fen, member, staff_code, bill.bill_no if bill else 0)


def payer_tenders(args: argparse.Namespace, has_member: bool) -> list[common_pb2.Tender]:
    """The tenders of --payer: another member's stored value each, before the --pay ones."""
    if not args.payers:
        return []
    if not has_member:
        raise cli.UsageError(
            "--payer pays a member's bill (多人收款): give the buyer's --phone, --card, --id or --qr"
        )
    tenders = []
    for reference, amount_fen in args.payers:
        tender = common_pb2.Tender(method=common_pb2.STORED_VALUE, payer=reference)
        if amount_fen is None:
            tender.take_rest = True
        else:
            tender.amount_fen = amount_fen
        tenders.append(tender)
    return tenders


def fetch_bill(
    args: argparse.Namespace, session: cli.Session
) -> transaction_pb2.SuspendedBill | None:
    """Suspended bill --bill N of --store, as ListSuspendedBills has it; None when it is
    not waiting there (settled or cancelled already)."""
    if not args.store:
        raise cli.UsageError("--bill needs --store: suspended bills are numbered per store")
    request = transaction_pb2.ListSuspendedBillsRequest(store_code=args.store)
    response = _transaction_call(session, "ListSuspendedBills", request)
    return next((bill for bill in response.bills if bill.bill_no == args.bill), None)


def report_missing_bill(args: argparse.Namespace) -> int:
    print(
        f"error: no suspended bill {args.bill} at {args.store}: settled or cancelled already "
        f"(mms bill list --store {args.store})",
        file=sys.stderr,
    )
    return cli.EXIT_DOMAIN_ERROR


def build_item(args: argparse.Namespace) -> catalog_pb2.CatalogItem:
    """The item of `mms item add`."""
    levels = [price.level_code for price in args.member_prices or []]
    repeated = next((level for level in levels if levels.count(level) > 1), None)
    if repeated is not None:
        raise cli.UsageError(f"--member-price {repeated} is given twice")
    if args.service and args.track_stock:
        raise cli.UsageError("--track-stock is for goods: a service item has no stock")
    return catalog_pb2.CatalogItem(
        sku=args.sku,
        name=args.name,
        category_code=args.category,
        kind=catalog_pb2.SERVICE if args.service else catalog_pb2.GOODS,
        retail_price_fen=args.price,
        member_prices=args.member_prices or [],
        barcode=args.barcode.strip(),
        no_discount=args.no_discount,
        track_stock=args.track_stock,
        inactive=args.inactive,
    )


def build_adjust_stock_request(args: argparse.Namespace) -> catalog_pb2.AdjustStockRequest:
    move, _help, _title = _STOCK_MOVES[args.stock_move]
    return catalog_pb2.AdjustStockRequest(
        request_id=args.request_id,
        store_code=args.store,
        sku=args.sku,
        move=move,
        quantity_milli=args.quantity,
        to_store_code=getattr(args, "to_store", None) or "",
        reason=args.reason,
        staff_code=args.staff,
    )


def build_suspend_request(args: argparse.Namespace) -> transaction_pb2.SuspendBillRequest:
    lines = bill_lines(args)
    if bool(lines) == (args.amount is not None):
        raise cli.UsageError("give the bill's lines (--item, --barcode) or --amount, one of them")
    return transaction_pb2.SuspendBillRequest(
        request_id=args.request_id,
        store_code=args.store,
        terminal_id=args.terminal,
        member=cli.member_ref(args),
        lines=lines,
        list_amount_fen=args.amount or 0,
        note=args.note,
        staff_code=args.staff,
    )


def build_refund_request(args: argparse.Namespace) -> transaction_pb2.RefundRequest:
    if args.refund_lines and args.amount is not None:
        raise cli.UsageError("refund by --line or by --amount, not both")
    numbers = [line.line_no for line in args.refund_lines or []]
    repeated = next((number for number in numbers if numbers.count(number) > 1), None)
    if repeated is not None:
        raise cli.UsageError(f"--line {repeated} is given twice")
    return transaction_pb2.RefundRequest(
        request_id=args.request_id,
        settlement_seq=args.seq,
        lines=args.refund_lines or [],
        amount_fen=args.amount or 0,
        store_code=args.store,
        staff_code=args.staff,
        reason=args.reason,
    )


def derived_request_id(request_id: str, suffix: str) -> str:
    """`request_id` + `suffix`, or a digest of `request_id` + `suffix` when that is too
    long: the same command's id always gives the same derived ids."""
    if len(request_id) + len(suffix) <= REQUEST_ID_CHARS_MAX:
        return request_id + suffix
    return hashlib.sha256(request_id.encode()).hexdigest()[:32] + suffix


def upsert_items(
    session: cli.Session, items: Sequence[catalog_pb2.CatalogItem], request_id: str
) -> tuple[int, int]:
    """Sends items with UpsertItems, ITEMS_PER_REQUEST at a time, chunk N under the id
    `REQUEST_ID-items-N`: the same command run again sends the same requests, which
    answer as the first time. Returns (created, updated)."""
    created = updated = 0
    for index, start in enumerate(range(0, len(items), ITEMS_PER_REQUEST)):
        request = catalog_pb2.UpsertItemsRequest(
            request_id=derived_request_id(request_id, f"-items-{index}"),
            items=items[start : start + ITEMS_PER_REQUEST],
        )
        response = _catalog_call(session, "UpsertItems", request)
        created += response.created
        updated += response.updated
    return created, updated


def list_all_items(session: cli.Session) -> list[catalog_pb2.CatalogItem]:
    """Every catalog item, by SKU, page after page."""
    items: list[catalog_pb2.CatalogItem] = []
    token = ""
    for _page in range(LIST_PAGES_MAX):
        request = catalog_pb2.ListItemsRequest(page_size=LIST_PAGE_SIZE_MAX, page_token=token)
        response = _catalog_call(session, "ListItems", request)
        items.extend(response.items)
        token = response.next_page_token
        if not token:
            return items
    raise RuntimeError(f"the catalog has more than {LIST_PAGES_MAX} pages")


# --- output ---------------------------------------------------------------------------


def _yes(flag: bool) -> str:
    return "yes 是" if flag else "no 否"


def _member_ref_text(reference: common_pb2.MemberRef) -> str:
    key = reference.WhichOneof("key")
    if key == "member_id":
        return f"#{reference.member_id}"
    if key == "phone":
        return f"phone 手机 {reference.phone}"
    if key == "card_no":
        return f"card 卡号 {reference.card_no}"
    if key == "qr":
        return "member code 会员码"
    return "walk-in 散客"


def _line_item_text(line: records_pb2.SettledLine) -> str:
    return line.name or "amount 金额"


def lines_text(
    title: str, lines: Sequence[records_pb2.SettledLine], *, refunded: bool = False
) -> str:
    """A table of settled lines: item, quantity, unit price, list price, each pricing step
    some line has (in pricing order), what is due; `refunded`: what came back so far."""
    steps = [
        (field, header)
        for field, header in _STEP_COLUMNS
        if any(getattr(line, field) for line in lines)
    ]
    headers = ["NO", "SKU", "ITEM", "QTY", "PRICE", "LIST", *(h for _, h in steps), "DUE"]
    if refunded:
        headers.append("REFUNDED")
    rows = []
    for line in lines:
        row = [
            str(line.line_no),
            line.sku or "-",
            _line_item_text(line),
            quantity_text(line.quantity_milli) if line.quantity_milli else "-",
            format_fen(line.unit_price_fen) if line.sku else "-",
            format_fen(line.list_fen),
            *(_minus(getattr(line, field)) for field, _ in steps),
            format_fen(line.due_fen),
        ]
        if refunded:
            row.append(_refunded_text(line))
        rows.append(row)
    return cli._table_text(title, headers, rows)


def _minus(fen: int) -> str:
    return f"-{format_fen(fen)}" if fen else "-"


def _refunded_text(line: records_pb2.SettledLine) -> str:
    if line.refunded_quantity_milli:
        return (
            f"{quantity_text(line.refunded_quantity_milli)} of {quantity_text(line.quantity_milli)}"
        )
    if line.refunded_fen:
        return format_fen(line.refunded_fen)
    return "-"


def is_itemized(lines: Sequence[records_pb2.SettledLine]) -> bool:
    """A bill of catalog lines (a quick checkout is one line without a SKU)."""
    return any(line.sku for line in lines)


def payment_rows(
    payments: Sequence[common_pb2.Payment], buyer_member_id: int | None, verb: str = "Paid 支付"
) -> list[tuple[str, str]]:
    """A row per payment. Stored value of another member than `buyer_member_id` (多人收款)
    names whose card paid ("of #2"); with None, every stored-value row names the card its
    money went back to ("to #1"), as a refund does."""
    rows = []
    for payment in payments:
        label, value = cli._payment_row(payment, verb)
        other = payment.member_id and payment.member_id != buyer_member_id
        if payment.method == common_pb2.STORED_VALUE and other:
            preposition = "to" if buyer_member_id is None else "of"
            label += f" {preposition} #{payment.member_id}"
            value += f" card 卡号 {payment.card_no}"
        rows.append((label, value))
    return rows


def price_rows(
    list_fen: int,
    discount: str,
    coupons: Sequence[tuple[str, str]],
    rounding_fen: int,
    amount_due_fen: int,
) -> list[tuple[str, str]]:
    """The bill's totals in pricing order: list price, discount, the coupons' rows (优惠券),
    rounding (抹零) when it let something go, the amount due."""
    rows = [("List price 原价", format_fen(list_fen)), ("Discount 折扣", discount), *coupons]
    if rounding_fen:
        rows.append(("Rounding 抹零", format_fen(rounding_fen)))
    rows.append(("Amount due 应付", format_fen(amount_due_fen)))
    return rows


def _level_change_row(before: str, after: str) -> tuple[str, str]:
    if before and after and before != after:
        return ("Level 等级", f"{before} → {after}")
    return ("Level 等级", after or before or "-")


def _refund_text(response: transaction_pb2.RefundResponse, request_id: str) -> str:
    rows = [
        ("Checkout 原单", f"ledger seq 流水号 {response.settlement_seq}"),
        ("Refunded 退款", format_fen(response.refunded_fen)),
        *payment_rows(response.payments, None, "Refunded 退款"),
    ]
    points = response.points_returned or response.points_clawed_back
    if points or response.HasField("balances"):
        rows.append(("Points returned 退回积分", str(response.points_returned)))
        rows.append(("Points clawed back 扣回积分", str(response.points_clawed_back)))
    rows += [
        (
            f"Returned 退回次卡 {use.item_code}",
            f"{use.uses} (package 套餐 #{use.lot_id}, {use.uses_left} left 剩余)",
        )
        for use in response.lot_uses
    ]
    if response.HasField("balances"):
        rows += cli._balance_rows(response.balances)
        rows.append(_level_change_row(response.level_before, response.level_after))
    rows += [
        ("Fully refunded 全部退完", _yes(response.fully_refunded)),
        ("Ledger seq 流水号", str(response.ledger_seq)),
        ("Time 时间", cli._time_text(response.at_ms)),
        ("Request 请求号", request_id),
    ]
    returned = [
        line for line in response.lines if line.due_fen or line.list_fen or line.quantity_milli
    ]
    return (
        cli._fields_text("Refund 退货", rows) + "\n\n" + lines_text("Returned 退回明细", returned)
    )


def _coupons_total_rows(coupon_fen: int) -> list[tuple[str, str]]:
    return [("Coupons 优惠券", format_fen(coupon_fen))] if coupon_fen else []


def _settlement_text(settlement: records_pb2.Settlement) -> str:
    member = f"#{settlement.member_id}" if settlement.member_id else "walk-in 散客"
    list_fen = sum(line.list_fen for line in settlement.lines)
    discount_fen = sum(line.member_discount_fen for line in settlement.lines)
    rows = [
        ("Member 会员", member),
        ("Store 门店", settlement.store_code),
        ("Time 时间", cli._time_text(settlement.at_ms)),
        *price_rows(
            list_fen,
            format_fen(discount_fen),
            _coupons_total_rows(sum(line.coupon_fen for line in settlement.lines)),
            sum(line.rounding_fen for line in settlement.lines),
            settlement.due_fen,
        ),
    ]
    if settlement.points_redeemed:
        value = format_fen(sum(line.points_fen for line in settlement.lines))
        rows.append(("Points used 积分抵现", f"{settlement.points_redeemed} = {value}"))
    rows += payment_rows(settlement.payments, settlement.member_id)
    rows += [cli._lot_use_row(use) for use in settlement.lot_uses]
    if settlement.member_id:
        rows.append(("Points earned 获得积分", str(settlement.points_earned)))
        rows.append(_level_change_row(settlement.level_before, settlement.level_after))
    if settlement.staff_code:
        rows.append(("Staff 员工", settlement.staff_code))
    refunds = ", ".join(str(seq) for seq in settlement.refund_seqs) or "none 无"
    rows += [
        ("Refunds 退货", refunds),
        ("Refunded 已退款", format_fen(settlement.refunded_fen)),
        ("Request 请求号", settlement.request_id),
    ]
    title = f"Settlement 结算单 {settlement.seq}"
    table = lines_text("Lines 明细", settlement.lines, refunded=True)
    return cli._fields_text(title, rows) + "\n\n" + table


def _price_text(fen: int) -> str:
    return format_fen(fen) if fen else "at the counter 现场定价"


def _member_prices_text(item: catalog_pb2.CatalogItem) -> str:
    return ", ".join(f"{p.level_code} {format_fen(p.price_fen)}" for p in item.member_prices)


def _item_rows(item: catalog_pb2.CatalogItem) -> list[tuple[str, str]]:
    rows = [
        ("SKU 商品编码", item.sku),
        ("Name 名称", item.name),
        ("Category 分类", item.category_code),
        ("Kind 类型", _KIND_LABELS.get(item.kind, str(item.kind))),
        ("Price 零售价", _price_text(item.retail_price_fen)),
    ]
    if item.member_prices:
        rows.append(("Member prices 会员价", _member_prices_text(item)))
    if item.barcode:
        rows.append(("Barcode 条码", item.barcode))
    rows += [
        ("No discount 不打折", _yes(item.no_discount)),
        ("Stock tracked 管理库存", _yes(item.track_stock)),
        ("Status 状态", "inactive 停售" if item.inactive else "on sale 在售"),
    ]
    return rows


def _item_show_text(response: catalog_pb2.GetItemResponse, store_code: str) -> str:
    rows = _item_rows(response.item)
    if store_code:
        stock = quantity_text(response.stock_milli) if response.has_stock else "not tracked 不管理"
        rows.append((f"Stock 库存 at {store_code}", stock))
    return cli._fields_text(f"Item 商品 {response.item.sku}", rows)


def _item_flags(item: catalog_pb2.CatalogItem) -> str:
    flags = [
        ("no discount 不打折", item.no_discount),
        ("stock 库存", item.track_stock),
        ("inactive 停售", item.inactive),
    ]
    return ", ".join(label for label, on in flags if on) or "-"


def _items_text(response: catalog_pb2.ListItemsResponse) -> str:
    headers = ("SKU", "NAME", "CATEGORY", "KIND", "PRICE", "MEMBER PRICES", "BARCODE", "FLAGS")
    rows = [
        (
            item.sku,
            item.name,
            item.category_code,
            _KIND_LABELS.get(item.kind, str(item.kind)),
            format_fen(item.retail_price_fen) if item.retail_price_fen else "现场定价",
            _member_prices_text(item) or "-",
            item.barcode or "-",
            _item_flags(item),
        )
        for item in response.items
    ]
    return cli._paged(cli._table_text("Items 商品", headers, rows), response.next_page_token)


def _bill_lines_text(bill: transaction_pb2.SuspendedBill) -> str:
    if not bill.lines:
        return f"amount 金额 {format_fen(bill.list_amount_fen)}"
    parts = []
    for line in bill.lines:
        code = line.sku or line.barcode
        part = f"{code}×{quantity_text(line.quantity_milli or MILLI_PER_UNIT)}"
        if line.unit_price_fen:
            part += f"@{format_fen(line.unit_price_fen)}"
        parts.append(part)
    return ", ".join(parts)


def _bill_rows(bill: transaction_pb2.SuspendedBill) -> list[tuple[str, str]]:
    member = _member_ref_text(bill.member) if bill.HasField("member") else "walk-in 散客"
    rows = [
        ("Bill 挂单号", str(bill.bill_no)),
        ("Store 门店", bill.store_code),
        ("Terminal 收银台", bill.terminal_id or "-"),
        ("Member 会员", member),
        ("Bill 内容", _bill_lines_text(bill)),
    ]
    if bill.note:
        rows.append(("Note 备注", bill.note))
    if bill.staff_code:
        rows.append(("Staff 员工", bill.staff_code))
    rows.append(("Time 时间", cli._time_text(bill.at_ms)))
    return rows


def _bills_text(store_code: str, response: transaction_pb2.ListSuspendedBillsResponse) -> str:
    headers = ("NO", "TIME", "TERMINAL", "MEMBER", "BILL", "NOTE", "STAFF")
    rows = [
        (
            str(bill.bill_no),
            cli._time_text(bill.at_ms),
            bill.terminal_id or "-",
            _member_ref_text(bill.member) if bill.HasField("member") else "walk-in 散客",
            _bill_lines_text(bill),
            " ".join(bill.note.split()) or "-",
            bill.staff_code or "-",
        )
        for bill in response.bills
    ]
    return cli._table_text(f"Suspended bills 挂单 at {store_code}", headers, rows)


def _stock_text(args: argparse.Namespace, response: catalog_pb2.AdjustStockResponse) -> str:
    title = _STOCK_MOVES[args.stock_move][2]
    label = "Counted 盘点数" if args.stock_move == "count" else "Quantity 数量"
    rows = [
        ("Item 商品", args.sku),
        ("Store 门店", args.store),
        (label, quantity_text(args.quantity)),
        ("Stock after 库存", quantity_text(response.stock_milli)),
    ]
    if args.stock_move == "transfer":
        rows.append(
            (f"Stock at {args.to_store} 调入门店库存", quantity_text(response.to_store_stock_milli))
        )
    if args.reason:
        rows.append(("Reason 原因", args.reason))
    rows.append(("Request 请求号", args.request_id))
    return cli._fields_text(title, rows)


# --- commands -------------------------------------------------------------------------


def _catalog_call(session: cli.Session, method: str, request: Message) -> Any:
    return session.call(catalog_pb2_grpc.CatalogServiceStub, method, request)


def _transaction_call(session: cli.Session, method: str, request: Message) -> Any:
    return session.call(transaction_pb2_grpc.TransactionServiceStub, method, request)


def _item_add(args: argparse.Namespace, session: cli.Session) -> int:
    item = build_item(args)
    request = catalog_pb2.UpsertItemsRequest(request_id=args.request_id, items=[item])
    response = _catalog_call(session, "UpsertItems", request)
    if args.json:
        cli._print_json(args, {**cli.message_to_json(response), "item": cli.message_to_json(item)})
        return cli.EXIT_OK
    title = "Item added 商品已添加" if response.created else "Item replaced 商品已更新"
    rows = [*_item_rows(item), ("Request 请求号", args.request_id)]
    print(cli._fields_text(title, rows))
    return cli.EXIT_OK


def _item_show(args: argparse.Namespace, session: cli.Session) -> int:
    if args.sku is not None:
        request = catalog_pb2.GetItemRequest(sku=args.sku, store_code=args.store)
    else:
        request = catalog_pb2.GetItemRequest(barcode=args.barcode, store_code=args.store)
    response = _catalog_call(session, "GetItem", request)
    return cli._output(args, response, lambda: _item_show_text(response, args.store))


def _item_list(args: argparse.Namespace, session: cli.Session) -> int:
    request = catalog_pb2.ListItemsRequest(
        category_code=args.category, page_size=args.page_size, page_token=args.page_token
    )
    response = _catalog_call(session, "ListItems", request)
    return cli._output(args, response, lambda: _items_text(response))


def _item_import(args: argparse.Namespace, session: cli.Session) -> int:
    from engine import item_import  # reads CSV files: loaded only for this command

    stub = session.stub(catalog_pb2_grpc.CatalogServiceStub)

    def upsert(request: catalog_pb2.UpsertItemsRequest) -> tuple[Any, bool]:
        response, call = stub.UpsertItems.with_call(
            request, timeout=session.timeout_s, metadata=session.metadata
        )
        return response, item_import.REPLAYED_METADATA in tuple(call.trailing_metadata() or ())

    try:
        summary = item_import.import_items(
            upsert, args.file, request_prefix=args.request_id, reason_of=cli._error_reason
        )
    except item_import.ImportFileError as error:  # nothing was sent
        print(f"error: {error}", file=sys.stderr)
        return cli.EXIT_USAGE
    if args.json:
        cli._print_json(args, _import_json(args.file, summary))
    else:
        print(_import_text(args.file, summary))
    return cli.EXIT_OK if summary.failed == 0 else cli.EXIT_DOMAIN_ERROR


def _import_json(path: str, summary: Any) -> dict[str, Any]:
    return {
        "file": path,
        "encoding": summary.encoding,
        "rows": summary.rows,
        "created": summary.created,
        "updated": summary.updated,
        "already_imported": summary.already_imported,
        "failed": summary.failed,
        "errors": [error._asdict() for error in summary.errors[: cli.ERRORS_SHOWN_MAX]],
        "errors_omitted": max(0, len(summary.errors) - cli.ERRORS_SHOWN_MAX),
    }


def _import_text(path: str, summary: Any) -> str:
    rows = [
        ("File 文件", path),
        ("Encoding 编码", summary.encoding),
        ("Rows 行数", str(summary.rows)),
        ("Created 新建", str(summary.created)),
        ("Updated 更新", str(summary.updated)),
        (
            "Already imported 此前已导入",
            f"{summary.already_imported} (by an earlier run of this file)",
        ),
        ("Failed 失败", str(summary.failed)),
    ]
    if not summary.already_imported:
        del rows[-2]
    text = cli._fields_text("Item import 商品导入", rows)
    if not summary.errors:
        return text
    shown = [(str(row), reason, message) for row, reason, message in summary.errors]
    table = cli._table_text(
        "Failed rows 失败行", ("ROW", "REASON", "MESSAGE"), shown[: cli.ERRORS_SHOWN_MAX]
    )
    omitted = len(shown) - cli.ERRORS_SHOWN_MAX
    more = (
        f"\n  ... and {omitted} more (--json lists the first {cli.ERRORS_SHOWN_MAX})"
        if omitted > 0
        else ""
    )
    return f"{text}\n\n{table}{more}"


def _stock_move(args: argparse.Namespace, session: cli.Session) -> int:
    response = _catalog_call(session, "AdjustStock", build_adjust_stock_request(args))
    return cli._output(args, response, lambda: _stock_text(args, response))


def _bill_suspend(args: argparse.Namespace, session: cli.Session) -> int:
    response = _transaction_call(session, "SuspendBill", build_suspend_request(args))
    rows = [*_bill_rows(response.bill), ("Request 请求号", args.request_id)]
    return cli._output(args, response, lambda: cli._fields_text("Bill suspended 已挂单", rows))


def _bill_list(args: argparse.Namespace, session: cli.Session) -> int:
    request = transaction_pb2.ListSuspendedBillsRequest(store_code=args.store)
    response = _transaction_call(session, "ListSuspendedBills", request)
    return cli._output(args, response, lambda: _bills_text(args.store, response))


def _bill_cancel(args: argparse.Namespace, session: cli.Session) -> int:
    request = transaction_pb2.CancelSuspendedBillRequest(
        request_id=args.request_id, store_code=args.store, bill_no=args.bill_no
    )
    response = _transaction_call(session, "CancelSuspendedBill", request)
    rows = [*_bill_rows(response.bill), ("Request 请求号", args.request_id)]
    return cli._output(args, response, lambda: cli._fields_text("Bill cancelled 已取消挂单", rows))


def _refund(args: argparse.Namespace, session: cli.Session) -> int:
    response = _transaction_call(session, "Refund", build_refund_request(args))
    return cli._output(args, response, lambda: _refund_text(response, args.request_id))


def _settlement_show(args: argparse.Namespace, session: cli.Session) -> int:
    request = transaction_pb2.GetSettlementRequest(seq=args.seq)
    response = _transaction_call(session, "GetSettlement", request)
    return cli._output(args, response, lambda: _settlement_text(response.settlement))
