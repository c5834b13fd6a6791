"""The bill being rung up at the counter (购物清单): goods scanned or keyed in, in the
order they came, before the engine settles them.

A line holds what the catalog said of the item when it was looked up (SKU, name, retail
price) and how much of it is bought. Scanning an item already on the bill adds one to
its line. The running total shown to the customer is the lines' list amounts, computed
as the engine computes a line's list amount (`engine.money.line_amount_fen`); member
prices, discounts, coupons, points and 抹零 are the engine's, known once it settled the
bill, and printed from its answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.money import MILLI_PER_UNIT, line_amount_fen
from engine.proto import catalog_pb2, transaction_pb2

__all__ = [
    "BILL_LINES_MAX",
    "QUANTITY_MILLI_MAX",
    "Bill",
    "BillError",
    "BillLine",
]

# At most this many lines on one bill: the engine refuses more (rust_core settle::LINES_MAX).
BILL_LINES_MAX = 200
# A line's quantity, in thousandths of a unit (rust_core catalog::QUANTITY_MILLI_MAX).
QUANTITY_MILLI_MAX = 100_000_000


class BillError(ValueError):
    """A change the bill cannot take; the bill is as it was."""


@dataclass
class BillLine:
    sku: str
    barcode: str  # as scanned or keyed in; empty for a line added by SKU
    name: str
    unit_price_fen: int  # the catalog's retail price, or the price given at the counter
    open_price: bool  # retail price 0 in the catalog: priced at the counter (现场定价)
    quantity_milli: int = MILLI_PER_UNIT

    @property
    def priced(self) -> bool:
        return self.unit_price_fen > 0

    @property
    def list_fen(self) -> int:
        """The line's list amount; 0 while an open-price line has no price yet."""
        if not self.priced:
            return 0
        return line_amount_fen(self.unit_price_fen, self.quantity_milli)

    def request_line(self) -> transaction_pb2.BillLine:
        """The line as the checkout sends it: by barcode when it was scanned, else by SKU;
        a price only for an item priced at the counter."""
        line = transaction_pb2.BillLine(quantity_milli=self.quantity_milli)
        if self.barcode:
            line.barcode = self.barcode
        else:
            line.sku = self.sku
        if self.open_price:
            line.unit_price_fen = self.unit_price_fen
        return line


class Bill:
    """The lines of the bill at the counter, at most `lines_max` of them."""

    def __init__(self, lines_max: int = BILL_LINES_MAX) -> None:
        assert 1 <= lines_max <= BILL_LINES_MAX
        self.lines_max = lines_max
        self.lines: list[BillLine] = []

    def __len__(self) -> int:
        return len(self.lines)

    def add(self, item: catalog_pb2.CatalogItem, barcode: str = "") -> tuple[int, BillLine]:
        """Adds one unit of `item` (its line number from 1, and the line): to its line when
        it is on the bill already, else as a new line. Raises BillError for an item that
        cannot be sold, a full bill or a quantity above the limit."""
        if item.inactive:
            raise BillError(f"{item.name} ({item.sku}) is no longer sold (停售)")
        for number, line in enumerate(self.lines, start=1):
            if line.sku == item.sku:
                self._check_quantity(line.quantity_milli + MILLI_PER_UNIT)
                line.quantity_milli += MILLI_PER_UNIT
                return number, line
        if len(self.lines) >= self.lines_max:
            raise BillError(f"the bill is full: at most {self.lines_max} lines")
        line = BillLine(
            sku=item.sku,
            barcode=barcode,
            name=item.name or item.sku,
            unit_price_fen=item.retail_price_fen,
            open_price=item.retail_price_fen == 0,
        )
        self.lines.append(line)
        return len(self.lines), line

    def line(self, number: int) -> BillLine:
        if not 1 <= number <= len(self.lines):
            raise BillError(
                f"no line {number}: the bill has {len(self.lines)} line(s)"
                if self.lines
                else "the bill is empty"
            )
        return self.lines[number - 1]

    def set_quantity(self, number: int, quantity_milli: int) -> BillLine:
        line = self.line(number)
        self._check_quantity(quantity_milli)
        line.quantity_milli = quantity_milli
        return line

    def set_price(self, number: int, unit_price_fen: int) -> BillLine:
        line = self.line(number)
        if not line.open_price:
            raise BillError(f"line {number} ({line.name}) has its catalog price")
        if unit_price_fen <= 0:
            raise BillError("a price above 0 is needed")
        line.unit_price_fen = unit_price_fen
        return line

    def remove(self, number: int) -> BillLine:
        line = self.line(number)
        del self.lines[number - 1]
        return line

    def clear(self) -> None:
        self.lines.clear()

    def total_fen(self) -> int:
        """The list total of the priced lines (before the engine's pricing steps)."""
        return sum(line.list_fen for line in self.lines)

    def unpriced(self) -> list[int]:
        """The numbers of the lines still waiting for a price given at the counter."""
        return [number for number, line in enumerate(self.lines, start=1) if not line.priced]

    def request_lines(self) -> list[transaction_pb2.BillLine]:
        return [line.request_line() for line in self.lines]

    @staticmethod
    def _check_quantity(quantity_milli: int) -> None:
        if not 1 <= quantity_milli <= QUANTITY_MILLI_MAX:
            raise BillError(
                f"a quantity is above 0 and at most {QUANTITY_MILLI_MAX // MILLI_PER_UNIT}"
            )
