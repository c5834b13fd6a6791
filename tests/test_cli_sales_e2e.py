"""`mms` itemized sales end to end: the real command against a real server.

Checkouts of catalog lines printed as receipts, suspended bills (挂单), refunds (退货) in
steps back to the fen, the catalog and stock, and config files with items. Every amount
is asserted to the fen, from examples/merchant.toml: 银卡 Silver 5% off and 1.2 points per
yuan (reached by one recharge of ¥500, which earns ¥80 bonus), member prices of the demo
items, 中华香烟 T001 not discounted, rounding to the jiao (抹分).

Each test has a merchant of its own on one server for the module (in-process `mms`, as
test_cli_e2e.py's output tests), so member ids and ledger seqs start at 1.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_cli_e2e import EXAMPLE, fields, mms, table

from conftest import RunningServer, acting_as
from engine import cli
from engine.config_file import load_config_and_items, loads_config_and_items

PHONE = "13800138000"
CARD = "C0001"
PHONE_B = "13900139000"
CARD_B = "C0002"


@dataclass(frozen=True)
class Merchant:
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
        result = self.mms(*argv, expect=1)
        assert result.stdout == ""
        assert result.stderr.startswith(f"error: {status} {reason}: "), result.stderr
        return result.stderr

    def balances(self, *selector: str) -> tuple[int, int, int]:
        """(principal, bonus, points) of a member, in fen and points."""
        shown = self.json("member", "show", *selector)["balances"]
        return shown["principal_fen"], shown["bonus_fen"], shown["points"]

    def stock(self, sku: str, store: str = "S001") -> int:
        return int(self.json("item", "show", "--sku", sku, "--store", store)["stock_milli"])


_NUMBERS = itertools.count(1)


@pytest.fixture
def merchant(shared_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> Merchant:
    """A merchant of its own, examples/merchant.toml (with its items) applied."""
    chain = Merchant(shared_server.address, f"sales-{next(_NUMBERS)}", capsys)
    chain.mms("config", "apply", str(EXAMPLE))
    return chain


def silver_member(merchant: Merchant, phone: str = PHONE, card: str = CARD) -> None:
    """A member at silver with 500.00 principal and 80.00 bonus."""
    merchant.mms("member", "register", "--phone", phone, "--name", "王五", "--card", card)
    merchant.mms("recharge", "--card", card, "--amount", "500")


def blocks(text: str) -> list[str]:
    return text.rstrip("\n").split("\n\n")


# The receipt's bill: member prices, 5% off, a weighed item, a barcode, an item without
# discount and one priced at the counter.
#   D001 可口可乐 6 x 3.50 = 21.00, silver's member price 3.30: 19.80
#   F003 苹果 1.35 kg x 12.80 = 17.28, 5% off 0.86: 16.42
#   D002 (by barcode) 2 x 2.00 = 4.00, 5% off: 3.80
#   T001 香烟 45.00, no discount
#   H003 造型 at 120.00, 5% off: 114.00
# 199.02 rounded down to the jiao: 0.02 let go, spread by largest remainder (T001, H003).
ITEMIZED = (
    "--item", "D001=6", "--item", "F003=1.35", "--barcode", "6921168509256=2",
    "--item", "T001", "--item", "H003@120",
)  # fmt: skip


def test_itemized_checkout_prints_a_receipt(merchant: Merchant) -> None:
    silver_member(merchant)
    result = merchant.mms("checkout", "--card", CARD, *ITEMIZED, "--request-id", "till-1")
    summary, lines = blocks(result.stdout)
    title, rows = fields(summary)
    assert title == "Checkout 消费"
    del rows["Time 时间"]
    assert rows == {
        "Member 会员": "#1",
        "Card 卡号": CARD,
        "List price 原价": "207.28",
        "Discount 折扣": "8.26 (5%)",
        "Rounding 抹零": "0.02",
        "Amount due 应付": "199.00",
        "Paid 支付 stored value 储值": "199.00 (principal 本金 199.00, bonus 赠送金 0.00)",
        "Points earned 获得积分": "238",  # 199.00 at 1.2 points per yuan
        "Balance 余额": "381.00 (principal 本金 301.00 + bonus 赠送金 80.00)",
        "Points 积分": "238",
        "Level 等级": "silver",
        "Ledger seq 流水号": "2",
        "Store 门店": "S001",
        "Request 请求号": "till-1",
    }
    assert lines.startswith("Lines 明细\n")
    assert table(lines) == [
        ["NO", "SKU", "ITEM", "QTY", "PRICE", "LIST", "DISCOUNT", "ROUNDING", "DUE"],
        ["1", "D001", "可口可乐 330ml Coke", "6", "3.50", "21.00", "-1.20", "-", "19.80"],
        ["2", "F003", "红富士苹果 Fuji apples (per kg)", "1.35", "12.80", "17.28", "-0.86", "-", "16.42"],
        ["3", "D002", "农夫山泉 550ml Spring water", "2", "2.00", "4.00", "-0.20", "-", "3.80"],
        ["4", "T001", "中华香烟 Chunghwa cigarettes", "1", "45.00", "45.00", "-", "-0.01", "44.99"],
        ["5", "H003", "造型设计 Styling (priced at the counter)", "1", "120.00", "120.00", "-6.00", "-0.01", "113.99"],
    ]  # fmt: skip
    # the JSON answer carries the same lines, with each line's share of the payment
    data = merchant.json("checkout", "--card", CARD, *ITEMIZED, "--request-id", "till-1")
    assert [line["due_fen"] for line in data["lines"]] == [1980, 1642, 380, 4499, 11399]
    assert [line["payments"][0]["amount_fen"] for line in data["lines"]] == [
        1980, 1642, 380, 4499, 11399,
    ]  # fmt: skip
    assert data["lines"][1]["quantity_milli"] == 1350
    assert (data["rounding_fen"], data["amount_due_fen"], data["ledger_seq"]) == (2, 19_900, 2)
    # goods left the shelf (the example allows negative stock); services have none
    assert merchant.stock("D001") == -6000
    assert merchant.stock("F003") == -1350


def test_points_and_cash_on_an_itemized_bill(merchant: Merchant) -> None:
    silver_member(merchant)
    merchant.mms("checkout", "--card", CARD, "--item", "T003", "--pay", "cash")  # 1258 points
    # D001 2 x 3.30 (silver's price) + T001 45.00 = 51.60; 100 points pay 1.00, spread
    # over the lines by what each has left (6.60 and 45.00); cash pays 50.60, nothing to
    # round
    data = merchant.json(
        "checkout", "--phone", PHONE, "--item", "D001=2", "--item", "T001",
        "--points", "100", "--pay", "cash", "--cash-received", "100",
    )  # fmt: skip
    assert (data["list_amount_fen"], data["discount_fen"]) == (5_200, 40)
    assert (data["points_redeemed"], data["points_value_fen"]) == (100, 100)
    assert (data["rounding_fen"], data["amount_due_fen"]) == (0, 5_160)
    (cash,) = data["payments"]
    assert (cash["amount_fen"], cash["change_fen"]) == (5_060, 4_940)
    # the points' value is spread over the lines by what each had left
    assert [line["points_fen"] for line in data["lines"]] == [13, 87]
    text = merchant.mms("settlement", "show", str(data["ledger_seq"])).stdout
    summary, lines = blocks(text)
    _, rows = fields(summary)
    assert rows["Points used 积分抵现"] == "100 = 1.00"
    assert rows["Amount due 应付"] == "51.60"
    assert rows["Paid 支付 cash 现金"] == "50.60 (received 实收 100.00, change 找零 49.40)"
    assert table(lines)[0] == [
        "NO", "SKU", "ITEM", "QTY", "PRICE", "LIST", "DISCOUNT", "POINTS", "DUE", "REFUNDED",
    ]  # fmt: skip


def test_partial_refund_then_the_rest_restores_every_balance(merchant: Merchant) -> None:
    silver_member(merchant)
    assert merchant.balances("--card", CARD) == (50_000, 8_000, 0)
    checkout = merchant.json("checkout", "--card", CARD, *ITEMIZED)
    seq = str(checkout["ledger_seq"])
    assert merchant.balances("--card", CARD) == (30_100, 8_000, 238)
    # 退货: 2 of the 6 cokes (6.60 of 19.80) and 0.35 kg of the 1.35 kg of apples
    # (16.42 x 0.35 / 1.35 = 4.257..., 4.25 by the cumulative rule)
    text = merchant.mms(
        "refund", seq, "--line", "1=2", "--line", "2=0.35", "--reason", "退货",
        "--request-id", "ret-1",
    ).stdout  # fmt: skip
    summary, lines = blocks(text)
    title, rows = fields(summary)
    assert title == "Refund 退货"
    del rows["Time 时间"]
    assert rows == {
        "Checkout 原单": f"ledger seq 流水号 {seq}",
        "Refunded 退款": "10.85",
        "Refunded 退款 stored value 储值 to #1": (
            "10.85 (principal 本金 10.85, bonus 赠送金 0.00) card 卡号 C0001"
        ),
        "Points returned 退回积分": "0",
        "Points clawed back 扣回积分": "13",
        "Balance 余额": "391.85 (principal 本金 311.85 + bonus 赠送金 80.00)",
        "Points 积分": "225",
        "Level 等级": "silver",
        "Fully refunded 全部退完": "no 否",
        "Ledger seq 流水号": "3",
        "Request 请求号": "ret-1",
    }
    assert table(lines) == [
        ["NO", "SKU", "ITEM", "QTY", "PRICE", "LIST", "DISCOUNT", "DUE"],
        ["1", "D001", "可口可乐 330ml Coke", "2", "3.50", "7.00", "-0.40", "6.60"],
        ["2", "F003", "红富士苹果 Fuji apples (per kg)", "0.35", "12.80", "4.47", "-0.22", "4.25"],
    ]  # fmt: skip
    assert merchant.stock("D001") == -4000  # two came back onto the shelf
    settlement = merchant.mms("settlement", "show", seq).stdout
    summary, lines = blocks(settlement)
    title, rows = fields(summary)
    assert title == f"Settlement 结算单 {seq}"
    assert (rows["Refunds 退货"], rows["Refunded 已退款"]) == ("3", "10.85")
    assert [row[-1] for row in table(lines)] == [
        "REFUNDED", "2 of 6", "0.35 of 1.35", "-", "-", "-",
    ]  # fmt: skip
    # 撤单: everything left, in one more refund; then nothing is left
    rest = merchant.json("refund", seq)
    assert (rest["refunded_fen"], rest["fully_refunded"]) == (18_815, True)
    assert rest["points_clawed_back"] == 225
    assert [line["quantity_milli"] for line in rest["lines"]] == [4000, 1000, 2000, 1000, 1000]
    assert merchant.balances("--card", CARD) == (50_000, 8_000, 0)  # back to the fen
    assert (merchant.stock("D001"), merchant.stock("F003"), merchant.stock("D002")) == (0, 0, 0)
    merchant.refused("refund", seq, status="FAILED_PRECONDITION", reason="NOTHING_TO_REFUND")
    history = merchant.mms("member", "history", "--card", CARD).stdout
    assert "REFUND 退货" in history


def test_refund_by_amount_of_a_walk_in_quick_checkout(merchant: Merchant) -> None:
    # 58.37 rounded down to the jiao: 58.30 in cash
    data = merchant.json("checkout", "--amount", "58.37", "--cash-received", "100")
    assert (data["rounding_fen"], data["amount_due_fen"]) == (7, 5_830)
    assert data["payments"][0]["change_fen"] == 4_170
    text = merchant.mms("checkout", "--amount", "10", "--cash-received", "20").stdout
    assert "Rounding" not in text and "Lines" not in text  # a quick checkout, as before
    seq = str(data["ledger_seq"])
    back = merchant.json("refund", seq, "--amount", "8.30", "--reason", "退差价")
    assert back["refunded_fen"] == 830
    (payment,) = back["payments"]
    assert (payment["method"], payment["amount_fen"]) == ("CASH", 830)
    assert back["fully_refunded"] is False
    merchant.refused(
        "refund", seq, "--line", "1=1",
        status="FAILED_PRECONDITION", reason="REFUND_MODE_MIXED",
    )  # fmt: skip
    merchant.refused(
        "refund", seq, "--amount", "50.01", status="INVALID_ARGUMENT", reason="REFUND_INVALID"
    )
    rest = merchant.json("refund", seq)
    assert (rest["refunded_fen"], rest["fully_refunded"]) == (5_000, True)
    assert merchant.mms("refund", seq, "--line", "1=1", "--amount", "1", expect=2).stderr
    merchant.refused("refund", "999", status="NOT_FOUND", reason="SETTLEMENT_NOT_FOUND")


def test_two_members_pay_one_bill_and_get_it_back(merchant: Merchant) -> None:
    merchant.mms("member", "register", "--phone", PHONE, "--name", "王五", "--card", CARD)
    merchant.mms("recharge", "--card", CARD, "--amount", "30")  # regular, no bonus
    merchant.mms("member", "register", "--phone", PHONE_B, "--name", "李四", "--card", CARD_B)
    merchant.mms("recharge", "--card", CARD_B, "--amount", "100")  # 100.00 + 10.00
    # 烫发 388.00: 李四's card pays 50.00, 王五's balance 30.00, cash the other 308.00
    argv = (
        "checkout", "--phone", PHONE, "--item", "H002", "--payer", f"phone:{PHONE_B}=50",
        "--pay", "balance+cash", "--cash-received", "400",
    )  # fmt: skip
    title, rows = fields(blocks(merchant.mms(*argv).stdout)[0])
    assert rows["Amount due 应付"] == "388.00"
    assert rows["Paid 支付 stored value 储值 of #2"] == (
        "50.00 (principal 本金 50.00, bonus 赠送金 0.00) card 卡号 C0002"
    )
    assert rows["Paid 支付 stored value 储值"] == "30.00 (principal 本金 30.00, bonus 赠送金 0.00)"
    assert rows["Paid 支付 cash 现金"] == "308.00 (received 实收 400.00, change 找零 92.00)"
    _, settled = fields(blocks(merchant.mms("settlement", "show", "3").stdout)[0])
    assert settled["Paid 支付 stored value 储值 of #2"] == rows["Paid 支付 stored value 储值 of #2"]
    assert merchant.balances("--card", CARD_B) == (5_000, 1_000, 0)
    assert merchant.balances("--card", CARD) == (0, 0, 388)
    back = merchant.json("refund", "3")
    assert sorted((p["method"], p["amount_fen"], p["card_no"]) for p in back["payments"]) == [
        ("CASH", 30_800, ""),
        ("STORED_VALUE", 3_000, CARD),
        ("STORED_VALUE", 5_000, CARD_B),
    ]
    assert merchant.balances("--card", CARD_B) == (10_000, 1_000, 0)
    assert merchant.balances("--card", CARD) == (3_000, 0, 0)
    # a walk-in bill is not paid from a member's card
    result = merchant.mms("checkout", "--amount", "5", "--payer", f"card:{CARD_B}", expect=2)
    assert "--payer pays a member's bill" in result.stderr


def test_suspend_list_settle_and_cancel(merchant: Merchant) -> None:
    silver_member(merchant)
    # the example's commission rules name staff: a staff code must be registered
    merchant.mms("staff", "add", "S01", "小张", "--role", "cashier", "--store", "S001")
    suspend = (
        "bill", "suspend", "--store", "S001", "--terminal", "T1", "--phone", PHONE,
        "--item", "H001", "--item", "D003=2", "--note", "顾客去取钱", "--staff", "S01",
    )  # fmt: skip
    title, rows = fields(merchant.mms(*suspend).stdout)
    assert title == "Bill suspended 已挂单"
    assert (rows["Bill 挂单号"], rows["Bill 内容"]) == ("1", "H001×1, D003×2")
    assert rows["Member 会员"] == f"phone 手机 {PHONE}"
    merchant.mms("bill", "suspend", "--store", "S001", "--terminal", "T2", "--amount", "35.5")
    merchant.mms("bill", "suspend", "--store", "S001", "--barcode", "6901939621271=3")
    merchant.mms("bill", "suspend", "--store", "S002", "--amount", "9")  # another store's
    listing = merchant.mms("bill", "list", "--store", "S001").stdout
    rows_listed = table(listing)
    assert listing.startswith("Suspended bills 挂单 at S001\n")
    assert rows_listed[0] == ["NO", "TIME", "TERMINAL", "MEMBER", "BILL", "NOTE", "STAFF"]
    assert [(r[0], r[2], r[3], r[4], r[5], r[6]) for r in rows_listed[1:]] == [
        ("1", "T1", f"phone 手机 {PHONE}", "H001×1, D003×2", "顾客去取钱", "S01"),
        ("2", "T2", "walk-in 散客", "amount 金额 35.50", "-", "-"),
        ("3", "-", "walk-in 散客", "6901939621271×3", "-", "-"),
    ]
    # resumed at another till: the bill's lines and member; silver: 60.00 + 22.80
    data = merchant.json("checkout", "--bill", "1", "--store", "S001")
    assert (data["member_id"], data["amount_due_fen"]) == (1, 8_280)
    assert [line["sku"] for line in data["lines"]] == ["H001", "D003"]
    assert [line["staff_code"] for line in data["lines"]] == ["S01", "S01"]
    bills = merchant.json("bill", "list", "--store", "S001")["bills"]
    assert [bill["bill_no"] for bill in bills] == [2, 3]  # settled once, gone
    result = merchant.mms("checkout", "--bill", "1", "--store", "S001", expect=1)
    assert result.stderr.startswith("error: no suspended bill 1 at S001: settled or cancelled")
    # a walk-in's bill of a scanned barcode, paid in cash: 3 x 3.50
    title, rows = fields(
        blocks(
            merchant.mms(
                "checkout", "--bill", "3", "--store", "S001", "--cash-received", "20"
            ).stdout
        )[0]
    )
    assert (rows["Member 会员"], rows["Amount due 应付"]) == ("walk-in 散客", "10.50")
    assert rows["Paid 支付 cash 现金"] == "10.50 (received 实收 20.00, change 找零 9.50)"
    title, rows = fields(merchant.mms("bill", "cancel", "2", "--store", "S001").stdout)
    assert (title, rows["Bill 内容"]) == ("Bill cancelled 已取消挂单", "amount 金额 35.50")
    assert "(none)" in merchant.mms("bill", "list", "--store", "S001").stdout
    merchant.refused(
        "bill", "cancel", "2", "--store", "S001",
        status="NOT_FOUND", reason="SUSPENDED_BILL_NOT_FOUND",
    )  # fmt: skip
    # the other store's bill is its own
    assert merchant.json("bill", "list", "--store", "S002")["bills"][0]["bill_no"] == 1
    result = merchant.mms("checkout", "--bill", "1", expect=2)
    assert "--bill needs --store" in result.stderr


def test_item_add_show_list(merchant: Merchant) -> None:
    add = (
        "item", "add", "--sku", "X1", "--name", "测试 Test", "--category", "food",
        "--price", "9.99", "--member-price", "gold=8.8", "--barcode", "12345678",
        "--track-stock",
    )  # fmt: skip
    title, rows = fields(merchant.mms(*add).stdout)
    assert title == "Item added 商品已添加"
    assert (rows["Price 零售价"], rows["Member prices 会员价"]) == ("9.99", "gold 8.80")
    assert merchant.json(*add)["updated"] == 1  # the same SKU again replaces it
    title, rows = fields(
        merchant.mms("item", "show", "--barcode", "12345678", "--store", "S002").stdout
    )
    assert title == "Item 商品 X1"
    assert (rows["Stock 库存 at S002"], rows["Stock tracked 管理库存"]) == ("0", "yes 是")
    shown = merchant.json("item", "show", "--sku", "H003")
    assert shown["item"]["retail_price_fen"] == 0 and shown["item"]["kind"] == "SERVICE"
    assert fields(merchant.mms("item", "show", "--sku", "H003").stdout)[1]["Price 零售价"] == (
        "at the counter 现场定价"
    )
    page = merchant.mms("item", "list", "--page-size", "3").stdout
    assert [row[0] for row in table(page)[:4]] == ["SKU", "D001", "D002", "D003"]
    assert page.rstrip().endswith("next page 下一页: --page-token D003")
    second = merchant.json("item", "list", "--page-size", "3", "--page-token", "D003")
    assert [item["sku"] for item in second["items"]] == ["F001", "F002", "F003"]
    hair = table(merchant.mms("item", "list", "--category", "hair").stdout)
    assert [row[0] for row in hair[1:]] == ["H001", "H002", "H003"]
    assert hair[1][5] == "silver 60.00, gold 55.00"
    merchant.refused("item", "show", "--sku", "NOPE", status="NOT_FOUND", reason="ITEM_NOT_FOUND")
    merchant.refused(
        "item", "add", "--sku", "X2", "--name", "x", "--category", "nosuch", "--price", "1",
        status="INVALID_ARGUMENT", reason="ITEM_INVALID",
    )  # fmt: skip
    merchant.refused(
        "checkout", "--item", "F009", status="FAILED_PRECONDITION", reason="ITEM_INACTIVE"
    )


def test_stock_moves(merchant: Merchant) -> None:
    title, rows = fields(
        merchant.mms(
            "stock", "in", "--store", "S001", "--sku", "F001", "--qty", "24", "--reason", "进货",
        ).stdout
    )  # fmt: skip
    assert (title, rows["Stock after 库存"], rows["Reason 原因"]) == ("Stock in 入库", "24", "进货")
    moved = merchant.json(
        "stock", "transfer", "--store", "S001", "--sku", "F001", "--qty", "4.5",
        "--to-store", "S002",
    )  # fmt: skip
    assert (moved["stock_milli"], moved["to_store_stock_milli"]) == (19_500, 4_500)
    out = merchant.json("stock", "out", "--store", "S001", "--sku", "F001", "--qty", "0.5")
    assert out["stock_milli"] == 19_000
    counted = merchant.json("stock", "count", "--store", "S002", "--sku", "F001", "--qty", "0")
    assert counted["stock_milli"] == 0
    merchant.mms("checkout", "--item", "F001=2")  # a sale takes it too
    assert (merchant.stock("F001"), merchant.stock("F001", "S002")) == (17_000, 0)
    merchant.refused(
        "stock", "in", "--store", "S001", "--sku", "H001", "--qty", "1",
        status="INVALID_ARGUMENT", reason="STOCK_INVALID",
    )  # fmt: skip
    assert (
        "--to-store"
        in merchant.mms(
            "stock", "transfer", "--store", "S001", "--sku", "F001", "--qty", "1", expect=2
        ).stderr
    )


ITEMS_CSV = (
    "sku,name,category,kind,price,barcode,no_discount,track_stock,member_price:gold\n"
    "C1,测试一 One,food,goods,1.50,,no,yes,1.20\n"
    "C2,测试二,nosuch,goods,2,,,,\n"  # unknown category: the server's refusal
    "C3,测试三,food,service,1.234,,,,\n"  # three decimals
    "C1,again,food,,1,,,,\n"  # a SKU twice
    "C4,洗头 Wash,hair,服务,30,,是,,\n"
)


def test_item_import_csv_utf8_and_gbk(merchant: Merchant, tmp_path: Path) -> None:
    utf8 = tmp_path / "items.csv"
    utf8.write_text(ITEMS_CSV, encoding="utf-8")
    result = merchant.mms("item", "import", str(utf8), expect=1)  # some rows failed
    summary, failed = blocks(result.stdout)
    _, rows = fields(summary)
    assert (rows["Encoding 编码"], rows["Rows 行数"]) == ("UTF-8", "5")
    assert (rows["Created 新建"], rows["Failed 失败"]) == ("2", "3")
    assert table(failed) == [
        ["ROW", "REASON", "MESSAGE"],
        ["3", "ITEM_INVALID", 'item C2 names unknown category "nosuch"'],
        ["4", "AMOUNT_INVALID", "price: amount '1.234' has more than 2 decimals"],
        ["5", "SKU_DUPLICATE", "sku C1 is on row 2 already"],
    ]
    item = merchant.json("item", "show", "--sku", "C1")["item"]
    assert (item["retail_price_fen"], item["track_stock"]) == (150, True)
    assert item["member_prices"] == [{"level_code": "gold", "price_fen": 120, "price": "1.20"}]
    c4 = merchant.json("item", "show", "--sku", "C4")["item"]
    assert (c4["kind"], c4["no_discount"]) == ("SERVICE", True)
    # the same file again: answered as the first time, nothing changes
    again = json.loads(merchant.mms("item", "import", str(utf8), "--json", expect=1).stdout)
    assert (again["created"], again["updated"], again["already_imported"]) == (0, 0, 2)
    assert [error["row_number"] for error in again["errors"]] == [3, 4, 5]
    # Chinese Excel's CSV: GBK, with Chinese headers
    gbk = tmp_path / "items_gbk.csv"
    gbk.write_bytes(
        "商品编码,名称,分类,零售价,条码,管理库存,会员价:silver\n"
        "G1,龙井茶 Longjing tea,drinks,88,69012345,是,80\n".encode("gbk")
    )
    data = merchant.json("item", "import", str(gbk))
    assert (data["encoding"], data["created"], data["failed"]) == ("GB18030", 1, 0)
    tea = merchant.json("item", "show", "--barcode", "69012345")["item"]
    assert (tea["name"], tea["retail_price_fen"]) == ("龙井茶 Longjing tea", 8_800)
    bad = tmp_path / "bad.csv"
    bad.write_text("sku,name,colour\n", encoding="utf-8")
    assert "colour" in merchant.mms("item", "import", str(bad), expect=2).stderr


def test_config_apply_sends_the_items_once(merchant: Merchant) -> None:
    # the fixture applied it once already, under a fresh request id: every item is there
    first = merchant.json("config", "apply", str(EXAMPLE), "--request-id", "cfg-items")
    assert first["items"] == {"count": 13, "created": 0, "updated": 13}
    again = merchant.json("config", "apply", str(EXAMPLE), "--request-id", "cfg-items")
    assert again == first  # every request answered as the first time
    assert again["config"]["version"] == 2
    text = merchant.mms("config", "apply", str(EXAMPLE)).stdout
    assert text.rstrip().endswith("Items 商品: 13 sent, 0 created 新建, 13 updated 更新")
    shown = merchant.mms("config", "show", "--toml", "--items").stdout
    config, items = loads_config_and_items(shown)
    expected_config, expected_items = load_config_and_items(EXAMPLE)
    assert config == expected_config
    assert sorted(items, key=lambda item: item.sku) == sorted(
        expected_items, key=lambda item: item.sku
    )
    assert "[[items]]" not in merchant.mms("config", "show", "--toml").stdout


def test_a_fresh_merchant_gets_the_example_items_from_the_command(
    shared_server: RunningServer,
) -> None:
    """The real command, in a child process, on a merchant never configured."""
    merchant_id = f"sales-cmd-{next(_NUMBERS)}"
    argv = ("config", "apply", str(EXAMPLE), "--merchant", merchant_id, "--json")
    data = json.loads(mms(shared_server.address, *argv).stdout)
    assert data["items"] == {"count": 13, "created": 13, "updated": 0}
    assert data["config"]["rounding"] == "ROUNDING_DOWN_TO_JIAO"
    listed = mms(shared_server.address, "item", "list", "--merchant", merchant_id).stdout
    assert len(table(listed)) == 1 + 13
