"""Itemized checkout over gRPC against a real server: every payment mix, suspended bills
resumed at another terminal, refunds in steps and after a restart, the catalog and stock,
and an audit of what it all wrote."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from client import DEMO_CONFIG, TIMEOUT_S, error_reason
from conftest import RunningServer
from engine import audit
from engine.proto import (
    admin_pb2,
    admin_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    config_pb2,
    config_pb2_grpc,
    member_pb2,
    member_pb2_grpc,
    transaction_pb2,
    transaction_pb2_grpc,
)

PM = common_pb2.PaymentMethod
FAILED = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def market_config() -> config_pb2.MerchantConfig:
    config = config_pb2.MerchantConfig()
    config.CopyFrom(DEMO_CONFIG)
    config.categories.extend(
        [
            config_pb2.Category(code="food", name="食品 Food"),
            config_pb2.Category(code="tobacco", name="烟酒 Tobacco"),
        ]
    )
    config.rounding = config_pb2.ROUNDING_DOWN_TO_JIAO
    config.stock_policy = config_pb2.REFUSE_NEGATIVE
    return config


ITEMS = [
    catalog_pb2.CatalogItem(
        sku="apple",
        name="苹果 Apple (kg)",
        category_code="food",
        retail_price_fen=1299,
        member_prices=[catalog_pb2.LevelPrice(level_code="gold", price_fen=999)],
        track_stock=True,
    ),
    catalog_pb2.CatalogItem(
        sku="milk",
        name="牛奶 Milk",
        category_code="food",
        retail_price_fen=650,
        barcode="6901234567892",
        track_stock=True,
    ),
    catalog_pb2.CatalogItem(
        sku="cig",
        name="香烟 Cigarettes",
        category_code="tobacco",
        retail_price_fen=2500,
        no_discount=True,
        track_stock=True,
    ),
    catalog_pb2.CatalogItem(sku="bag", name="购物袋 Bag", category_code="food", retail_price_fen=0),
]


class Market:
    """A merchant of its own on the shared server, with the catalog and stock at S001."""

    def __init__(self, channel: grpc.Channel, merchant: str, *, set_up: bool = True) -> None:
        self.config = config_pb2_grpc.ConfigServiceStub(channel)
        self.members = member_pb2_grpc.MemberServiceStub(channel)
        self.transactions = transaction_pb2_grpc.TransactionServiceStub(channel)
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)
        self.metadata = (("mms-merchant", merchant),)
        if not set_up:
            return
        self.call(self.config.ApplyConfig, config_pb2.ApplyConfigRequest(config=market_config()))
        self.call(self.catalog.UpsertItems, catalog_pb2.UpsertItemsRequest(items=ITEMS))
        for sku in ("apple", "milk", "cig"):
            self.stock_move(sku, catalog_pb2.STOCK_IN, 50_000)

    def call(self, method: Any, request: Any) -> Any:
        if "request_id" in type(request).DESCRIPTOR.fields_by_name and not request.request_id:
            request.request_id = uuid.uuid4().hex
        return method(request, timeout=TIMEOUT_S, metadata=self.metadata)

    def stock_move(self, sku: str, move: int, quantity_milli: int, **fields: Any) -> Any:
        request = catalog_pb2.AdjustStockRequest(
            store_code="S001", sku=sku, move=move, quantity_milli=quantity_milli, **fields
        )
        return self.call(self.catalog.AdjustStock, request)

    def stock(self, sku: str, store: str = "S001") -> int:
        request = catalog_pb2.GetItemRequest(sku=sku, store_code=store)
        return self.call(self.catalog.GetItem, request).stock_milli

    def member(self, phone: str, recharge_fen: int = 0) -> None:
        self.call(
            self.members.RegisterMember, member_pb2.RegisterMemberRequest(phone=phone, name="顾客")
        )
        if recharge_fen:
            request = transaction_pb2.RechargeRequest(
                member=common_pb2.MemberRef(phone=phone), amount_fen=recharge_fen
            )
            self.call(self.transactions.Recharge, request)

    def balances(self, phone: str) -> common_pb2.Balances:
        request = member_pb2.GetMemberRequest(member=common_pb2.MemberRef(phone=phone))
        return self.call(self.members.GetMember, request).balances

    def checkout(self, lines: list[tuple[str, int]], tenders: list[Any], **fields: Any) -> Any:
        bill = [transaction_pb2.BillLine(sku=sku, quantity_milli=q) for sku, q in lines]
        request = transaction_pb2.CheckoutRequest(lines=bill, tenders=tenders, **fields)
        return self.call(self.transactions.Checkout, request)

    def refund(self, seq: int, lines: list[tuple[int, int]] = (), **fields: Any) -> Any:
        request = transaction_pb2.RefundRequest(
            settlement_seq=seq,
            lines=[transaction_pb2.RefundLine(line_no=n, quantity_milli=q) for n, q in lines],
            **fields,
        )
        return self.call(self.transactions.Refund, request)


def rest(method: int, **fields: Any) -> common_pb2.Tender:
    return common_pb2.Tender(method=method, take_rest=True, **fields)


def exact(method: int, amount_fen: int, **fields: Any) -> common_pb2.Tender:
    return common_pb2.Tender(method=method, amount_fen=amount_fen, **fields)


def refused(code: grpc.StatusCode, reason: str, call: Any) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert (caught.value.code(), error_reason(caught.value)) == (code, reason)


def by_method(response: Any) -> list[tuple[int, int]]:
    return [(p.method, p.amount_fen) for p in response.payments]


@pytest.fixture(scope="module")
def market(shared_server: RunningServer) -> Any:
    with shared_server.channel() as channel:
        yield Market(channel, "market")


def test_an_itemized_bill_shows_every_step_and_takes_stock(market: Market) -> None:
    market.member("13900000001", 10_000)
    # 1.5 kg apples 1948.5 -> 1949, 3 milk 1950, cigarettes 2500: regular level, no discount
    paid = market.checkout(
        [("apple", 1_500), ("milk", 3_000), ("cig", 1_000)],
        [rest(PM.STORED_VALUE)],
        member=common_pb2.MemberRef(phone="13900000001"),
    )
    assert [(line.sku, line.list_fen, line.due_fen) for line in paid.lines] == [
        ("apple", 1949, 1946),
        ("milk", 1950, 1947),
        ("cig", 2500, 2497),
    ]
    # 6399 rounded down to the jiao (抹零): 9 fen let go, spread over the lines
    assert (paid.list_amount_fen, paid.rounding_fen, paid.amount_due_fen) == (6399, 9, 6390)
    assert market.balances("13900000001").principal_fen == 10_000 - 6390
    assert (market.stock("apple"), market.stock("milk"), market.stock("cig")) == (
        48_500,
        47_000,
        49_000,
    )


@pytest.mark.parametrize(
    ("tenders", "expected"),
    [
        ([rest(PM.STORED_VALUE)], [(PM.STORED_VALUE, 1300)]),
        ([rest(PM.CASH, cash_received_fen=2000)], [(PM.CASH, 1300)]),
        ([rest(PM.BANK_CARD, external_ref="POS-778")], [(PM.BANK_CARD, 1300)]),
        ([rest(PM.SCAN_PAY, external_ref="wx-4200001")], [(PM.SCAN_PAY, 1300)]),
        ([exact(PM.STORED_VALUE, 300), rest(PM.CASH)], [(PM.STORED_VALUE, 300), (PM.CASH, 1000)]),
        (
            [exact(PM.SCAN_PAY, 500, external_ref="ali-1"), exact(PM.BANK_CARD, 800)],
            [(PM.SCAN_PAY, 500), (PM.BANK_CARD, 800)],
        ),
    ],
)
def test_each_payment_mix(market: Market, tenders: list[Any], expected: list[Any]) -> None:
    phone = f"1390000{len(expected)}{tenders[0].method}{len(tenders[-1].external_ref):02d}"
    market.member(phone, 5_000)
    paid = market.checkout([("milk", 2_000)], tenders, member=common_pb2.MemberRef(phone=phone))
    assert by_method(paid) == expected
    stored = sum(fen for method, fen in expected if method == PM.STORED_VALUE)
    assert market.balances(phone).principal_fen == 5_000 - stored
    if tenders[0].cash_received_fen:
        assert paid.payments[0].change_fen == 700
    back = market.refund(paid.ledger_seq)
    assert back.fully_refunded and by_method(back) == expected
    assert market.balances(phone).principal_fen == 5_000


def test_points_pay_part_and_two_members_share_a_bill(market: Market) -> None:
    market.member("13900000101", 100_000)
    market.member("13900000102", 3_000)
    earned = market.checkout(
        [("cig", 4_000)], [rest(PM.CASH)], member=common_pb2.MemberRef(phone="13900000101")
    )
    assert earned.points_earned == 100
    paid = market.checkout(
        [("milk", 4_000)],  # 2600
        [
            exact(PM.STORED_VALUE, 1_000),
            rest(PM.STORED_VALUE, payer=common_pb2.MemberRef(phone="13900000102")),
        ],
        member=common_pb2.MemberRef(phone="13900000101"),
        points_to_redeem=100,
    )
    assert (paid.points_value_fen, paid.lines[0].points_fen) == (100, 100)
    assert [p.amount_fen for p in paid.payments] == [1_000, 1_500]
    payers = {p.member_id for p in paid.payments}
    assert len(payers) == 2 and paid.member_id in payers
    assert market.balances("13900000102").principal_fen == 1_500
    first = market.balances("13900000101")
    assert (first.principal_fen, first.points) == (100_000 - 1_000, 100 - 100 + 25)
    market.refund(paid.ledger_seq)
    assert market.balances("13900000102").principal_fen == 3_000
    first = market.balances("13900000101")
    assert (first.principal_fen, first.points) == (100_000, 100)


def test_a_bill_that_does_not_add_up_moves_nothing(market: Market) -> None:
    market.member("13900000201", 2_000)
    before = (market.balances("13900000201"), market.stock("milk"))
    member = common_pb2.MemberRef(phone="13900000201")
    refused(
        INVALID,
        "PAYMENTS_MISMATCH",
        lambda: market.checkout([("milk", 1_000)], [exact(PM.CASH, 649)], member=member),
    )
    refused(
        FAILED,
        "INSUFFICIENT_BALANCE",
        lambda: market.checkout([("milk", 4_000)], [rest(PM.STORED_VALUE)], member=member),
    )
    refused(
        NOT_FOUND, "ITEM_NOT_FOUND", lambda: market.checkout([("pear", 1_000)], [rest(PM.CASH)])
    )
    refused(INVALID, "BILL_INVALID", lambda: market.checkout([("milk", -5)], [rest(PM.CASH)]))
    refused(INVALID, "BILL_INVALID", lambda: market.checkout([("bag", 1_000)], [rest(PM.CASH)]))
    refused(FAILED, "OUT_OF_STOCK", lambda: market.checkout([("milk", 999_000)], [rest(PM.CASH)]))
    assert (market.balances("13900000201"), market.stock("milk")) == before


def test_an_open_price_item_and_a_barcode(market: Market) -> None:
    lines = [
        transaction_pb2.BillLine(sku="bag", unit_price_fen=30),
        transaction_pb2.BillLine(barcode="6901234567892", quantity_milli=2_000),
    ]
    request = transaction_pb2.CheckoutRequest(lines=lines, tenders=[rest(PM.CASH)])
    paid = market.call(market.transactions.Checkout, request)
    assert [(line.sku, line.unit_price_fen, line.list_fen) for line in paid.lines] == [
        ("bag", 30, 30),
        ("milk", 650, 1300),
    ]
    override = transaction_pb2.CheckoutRequest(
        lines=[transaction_pb2.BillLine(sku="milk", unit_price_fen=1)], tenders=[rest(PM.CASH)]
    )
    # The market's head office admin is a manager: the price override (改价) is theirs to
    # make (a cashier's is refused: tests/test_auth_e2e.py).
    overridden = market.call(market.transactions.Checkout, override)
    assert [(line.sku, line.unit_price_fen, line.list_fen) for line in overridden.lines] == [
        ("milk", 1, 1)
    ]


def test_a_suspended_bill_is_settled_once_at_another_terminal(market: Market) -> None:
    market.member("13900000301", 5_000)
    member = common_pb2.MemberRef(phone="13900000301")
    suspend = transaction_pb2.SuspendBillRequest(
        store_code="S001",
        terminal_id="POS-1",
        member=member,
        lines=[transaction_pb2.BillLine(sku="milk", quantity_milli=1_000)],
        note="顾客去拿钱包",
    )
    bill = market.call(market.transactions.SuspendBill, suspend).bill
    listed = market.call(
        market.transactions.ListSuspendedBills,
        transaction_pb2.ListSuspendedBillsRequest(store_code="S001"),
    ).bills
    assert [(b.bill_no, b.terminal_id, b.note) for b in listed] == [
        (bill.bill_no, "POS-1", "顾客去拿钱包")
    ]
    other_store = market.call(
        market.transactions.ListSuspendedBills,
        transaction_pb2.ListSuspendedBillsRequest(store_code="S002"),
    )
    assert list(other_store.bills) == []
    paid = market.checkout(
        [(line.sku, line.quantity_milli) for line in bill.lines],
        [rest(PM.STORED_VALUE)],
        member=member,
        store_code="S001",
        suspended_bill_no=bill.bill_no,
    )
    assert paid.amount_due_fen == 650
    refused(
        NOT_FOUND,
        "SUSPENDED_BILL_NOT_FOUND",
        lambda: market.checkout(
            [("milk", 1_000)],
            [rest(PM.STORED_VALUE)],
            member=member,
            suspended_bill_no=bill.bill_no,
        ),
    )
    assert market.balances("13900000301").principal_fen == 5_000 - 650
    again = market.call(market.transactions.SuspendBill, suspend).bill
    assert again == bill, "the same request id answers the first suspension again"
    suspend.request_id = ""
    second = market.call(market.transactions.SuspendBill, suspend).bill
    assert second.bill_no == bill.bill_no + 1
    cancel = transaction_pb2.CancelSuspendedBillRequest(store_code="S001", bill_no=second.bill_no)
    assert (
        market.call(market.transactions.CancelSuspendedBill, cancel).bill.bill_no == second.bill_no
    )
    refused(
        NOT_FOUND,
        "SUSPENDED_BILL_NOT_FOUND",
        lambda: market.call(
            market.transactions.CancelSuspendedBill,
            transaction_pb2.CancelSuspendedBillRequest(store_code="S001", bill_no=second.bill_no),
        ),
    )


def test_stock_moves(market: Market) -> None:
    moved = market.stock_move("cig", catalog_pb2.STOCK_TRANSFER, 5_000, to_store_code="S002")
    assert moved.to_store_stock_milli == 5_000
    assert market.stock("cig", "S002") == 5_000
    counted = market.stock_move("cig", catalog_pb2.STOCK_ADJUST, 7_000, reason="盘点")
    assert counted.stock_milli == 7_000
    refused(
        INVALID,
        "STOCK_INVALID",
        lambda: market.stock_move("cig", catalog_pb2.STOCK_OUT, 0),
    )
    refused(
        INVALID,
        "STOCK_INVALID",
        lambda: market.stock_move("bag", catalog_pb2.STOCK_IN, 1_000),
    )
    listed = market.call(
        market.catalog.ListItems, catalog_pb2.ListItemsRequest(category_code="food", page_size=2)
    )
    assert [item.sku for item in listed.items] == ["apple", "bag"]
    following = market.call(
        market.catalog.ListItems,
        catalog_pb2.ListItemsRequest(
            category_code="food", page_size=2, page_token=listed.next_page_token
        ),
    )
    assert [item.sku for item in following.items] == ["milk"]


def test_refunds_in_steps_survive_a_restart(shared_server: RunningServer, tmp_path: Path) -> None:
    with shared_server.channel() as channel:
        market = Market(channel, "refunds")
        market.member("13900000401", 20_000)
        member = common_pb2.MemberRef(phone="13900000401")
        paid = market.checkout(
            [("apple", 2_000), ("cig", 3_000)], [rest(PM.STORED_VALUE)], member=member
        )
        assert paid.amount_due_fen == 2598 + 7500 - 8  # rounding to the jiao
        first = market.refund(paid.ledger_seq, [(2, 1_000)], reason="退一包")
        # cigarettes 7500 less their 6 of the 8 fen rounding: a third of 7494
        assert (first.refunded_fen, first.fully_refunded) == (2498, False)
        assert market.stock("cig") == 50_000 - 3_000 + 1_000
    shared_server.restart()
    with shared_server.channel() as channel:
        market_again = Market(channel, "refunds", set_up=False)
        refused(
            INVALID,
            "REFUND_INVALID",
            lambda: market_again.refund(paid.ledger_seq, [(2, 2_001)]),
        )
        rest_back = market_again.refund(paid.ledger_seq)
        assert rest_back.fully_refunded
        assert rest_back.refunded_fen == paid.amount_due_fen - 2498
        assert market_again.balances("13900000401").principal_fen == 20_000
        assert market_again.stock("cig") == 50_000 and market_again.stock("apple") == 50_000
        refused(FAILED, "NOTHING_TO_REFUND", lambda: market_again.refund(paid.ledger_seq))
        settlement = market_again.call(
            market_again.transactions.GetSettlement,
            transaction_pb2.GetSettlementRequest(seq=paid.ledger_seq),
        ).settlement
        assert len(settlement.refund_seqs) == 2
        assert settlement.refunded_fen == paid.amount_due_fen
        market_again.call(
            market_again.admin.Backup,
            admin_pb2.BackupRequest(destination_dir=str(tmp_path / "backup")),
        )
    report = audit.audit(str(tmp_path / "backup"))
    assert report.problems == [] and report.clean, report.problems
    assert report.counts["settlements"] >= 2
