"""The bill at the counter (drivers/bill.py): lines in scan order, the same item again adds
one, bounded at the engine's 200 lines, quantities and prices given at the counter; the
list amounts rounded as the engine rounds them; the display's item line; the prompt's
`bill` commands."""

from __future__ import annotations

import pytest

from drivers.bill import BILL_LINES_MAX, QUANTITY_MILLI_MAX, Bill, BillError
from drivers.bridge import parse_command
from drivers.display import item_line
from engine.money import line_amount_fen
from engine.proto import catalog_pb2, transaction_pb2

MILK = catalog_pb2.CatalogItem(sku="milk", name="牛奶 Milk", retail_price_fen=650)
APPLE = catalog_pb2.CatalogItem(sku="apple", name="苹果 Apple (kg)", retail_price_fen=1299)
BAG = catalog_pb2.CatalogItem(sku="bag", name="购物袋 Bag", retail_price_fen=0)


def test_the_same_item_again_adds_one_to_its_line() -> None:
    bill = Bill()
    assert bill.add(MILK, "6901234567892")[0] == 1
    assert bill.add(APPLE)[0] == 2
    number, line = bill.add(MILK, "6901234567892")
    assert (number, line.quantity_milli, line.list_fen) == (1, 2000, 1300)
    assert bill.total_fen() == 1300 + 1299
    assert bill.request_lines() == [
        transaction_pb2.BillLine(barcode="6901234567892", quantity_milli=2000),
        transaction_pb2.BillLine(sku="apple", quantity_milli=1000),
    ]


def test_quantities_removal_and_clearing() -> None:
    bill = Bill()
    bill.add(APPLE)
    bill.add(MILK)
    assert bill.set_quantity(1, 333).list_fen == 433  # 432.567 fen, half up as the engine
    assert bill.total_fen() == 433 + 650
    with pytest.raises(BillError):
        bill.set_quantity(1, 0)
    with pytest.raises(BillError):
        bill.set_quantity(1, QUANTITY_MILLI_MAX + 1)
    with pytest.raises(BillError, match="no line 3"):
        bill.remove(3)
    assert bill.remove(1).sku == "apple"
    assert [line.sku for line in bill.lines] == ["milk"]
    bill.clear()
    assert len(bill) == 0 and bill.total_fen() == 0
    with pytest.raises(BillError, match="empty"):
        bill.set_quantity(1, 1000)


def test_an_item_priced_at_the_counter_waits_for_its_price() -> None:
    bill = Bill()
    bill.add(BAG, "")
    assert bill.unpriced() == [1] and bill.total_fen() == 0
    with pytest.raises(BillError):
        bill.set_price(1, 0)
    bill.set_price(1, 50)
    assert bill.unpriced() == []
    assert bill.request_lines() == [
        transaction_pb2.BillLine(sku="bag", quantity_milli=1000, unit_price_fen=50)
    ]
    bill.add(MILK)
    with pytest.raises(BillError, match="catalog price"):
        bill.set_price(2, 100)


def test_the_bill_is_bounded_and_an_inactive_item_is_refused() -> None:
    bill = Bill()
    for index in range(BILL_LINES_MAX):
        bill.add(catalog_pb2.CatalogItem(sku=f"s{index}", name="x", retail_price_fen=1))
    with pytest.raises(BillError, match="full"):
        bill.add(catalog_pb2.CatalogItem(sku="one-more", name="x", retail_price_fen=1))
    bill.add(catalog_pb2.CatalogItem(sku="s0", name="x", retail_price_fen=1))  # same: +1
    assert len(bill) == BILL_LINES_MAX == 200 and bill.lines[0].quantity_milli == 2000
    with pytest.raises(BillError, match="停售"):
        Bill().add(
            catalog_pb2.CatalogItem(sku="old", name="旧货", retail_price_fen=1, inactive=True)
        )


def test_line_amounts_round_half_up_to_the_fen() -> None:
    assert line_amount_fen(1299, 333) == 433
    assert line_amount_fen(1, 500) == 1  # half a fen rounds up
    assert line_amount_fen(1, 499) == 0
    assert line_amount_fen(650, 3000) == 1950
    with pytest.raises(ValueError):
        line_amount_fen(650, 0)


def test_the_display_cuts_the_name_never_the_amount() -> None:
    assert item_line("牛奶 Milk", 650, 20, "gb18030") == "牛奶 Milk" + " " * 7 + "6.50"
    long = item_line("进口有机全脂纯牛奶礼盒装", 123_456, 20, "gb18030")
    assert long.endswith(" 1234.56") and len(long.encode("gb18030")) <= 20
    assert long.startswith("进口有机全脂")


def test_bill_commands_at_the_prompt() -> None:
    assert parse_command("bill").action == "show"
    assert parse_command("bill clear").action == "clear"
    add = parse_command("bill add 6901234567892")
    assert (add.name, add.action, add.code) == ("bill", "add", "6901234567892")
    qty = parse_command("bill qty 2 1.5")
    assert (qty.action, qty.line_no, qty.value) == ("qty", 2, 1500)
    price = parse_command("bill price 1 0.5")
    assert (price.action, price.line_no, price.value) == ("price", 1, 50)
    assert parse_command("bill remove 3").line_no == 3
    for wrong in (
        "bill remove",
        "bill remove 0",
        "bill remove x",
        "bill qty 1 1.0001",
        "bill qty 1 -1",
        "bill price 1 1.001",
        "bill clear now",
        "bill sell",
    ):
        assert parse_command(wrong).name == "invalid", wrong
