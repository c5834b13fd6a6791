"""`mms item import`: catalog items from a CSV file, sent with UpsertItems in chunks.

The file has a header row; columns by English or Chinese name: sku 商品编码, name 名称,
category 分类 (these three and price are required), kind 类型 (goods 商品 / service 服务),
price 零售价 (yuan, "0" = priced at the counter), barcode 条码, no_discount 不打折,
track_stock 管理库存, inactive 停售, and `member_price:LEVEL` (会员价:LEVEL) for the member
price of a level. Flags are true/false, yes/no, 1/0 or 是/否; an empty cell is false.
Money is parsed exactly (engine.money), never through a float.

A CSV file is read as UTF-8 (a BOM tolerated) when it is valid UTF-8, else as GB18030 (what
Chinese Excel's plain CSV export writes), as `mms member import` does.

Rows the file itself gets wrong (a bad price, a missing name, a SKU twice) are reported
with their row number and never sent. The rest go 1,000 per UpsertItems request, each
request id the file's prefix and the chunk's index, so importing the same file again sends
the same requests and gets their first answers. A chunk the server refuses (an unknown
category, a barcode another item holds) is sent again row by row, each under its own id,
so that its good rows land and each bad row is reported with the server's reason.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc

from engine.importer import (
    CSV_ENCODINGS,
    FILE_BYTES_MAX,
    HASH_BLOCK_BYTES,
    REPLAYED_METADATA,
    ImportFileError,
    _check_size,
    _csv_encoding,
    _csv_rows,
)
from engine.money import parse_yuan
from engine.proto import catalog_pb2

__all__ = [
    "CHUNK_ITEMS",
    "FILE_BYTES_MAX",
    "ImportFileError",
    "ItemImportSummary",
    "ItemRowError",
    "REPLAYED_METADATA",
    "import_items",
    "parse_items",
]

# The core's limit of items per UpsertItems request (catalog::ITEMS_PER_REQUEST_MAX).
CHUNK_ITEMS = 1000
ROWS_MAX = 1_000_000
CELL_CHARS_MAX = 200
MEMBER_PRICE_PREFIXES = ("member_price:", "会员价:")
# Part of every default request id: change it when a change here could turn the same file
# into other requests, so that a re-run is not refused as a reused id.
IMPORT_FORMAT = b"mms-item-import-v1\n"
REQUEST_PREFIX_CHARS_MAX = 48

# Reasons of rows refused before they are sent; the server's own (ITEM_INVALID, ...) come
# back as it gives them.
FIELD_MISSING = "FIELD_MISSING"
AMOUNT_INVALID = "AMOUNT_INVALID"
FLAG_INVALID = "FLAG_INVALID"
KIND_INVALID = "KIND_INVALID"
SKU_DUPLICATE = "SKU_DUPLICATE"
BARCODE_DUPLICATE = "BARCODE_DUPLICATE"
CELL_TOO_LONG = "CELL_TOO_LONG"

FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "sku": ("sku", "code", "商品编码", "编码", "货号"),
    "name": ("name", "名称", "商品名称"),
    "category": ("category", "category_code", "分类", "类别"),
    "kind": ("kind", "type", "类型"),
    "price": ("price", "retail_price", "零售价", "价格", "售价"),
    "barcode": ("barcode", "条码", "条形码"),
    "no_discount": ("no_discount", "不打折"),
    "track_stock": ("track_stock", "管理库存"),
    "inactive": ("inactive", "停售"),
}
REQUIRED_FIELDS = ("sku", "name", "category", "price")
KINDS = {
    "": catalog_pb2.GOODS,
    "goods": catalog_pb2.GOODS,
    "商品": catalog_pb2.GOODS,
    "service": catalog_pb2.SERVICE,
    "服务": catalog_pb2.SERVICE,
    "服务项目": catalog_pb2.SERVICE,
}
FLAGS = {
    "": False,
    "0": False,
    "false": False,
    "no": False,
    "n": False,
    "否": False,
    "1": True,
    "true": True,
    "yes": True,
    "y": True,
    "是": True,
}
# A refused call with one of these codes may pass later; the request id makes a retry safe.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
CALL_ATTEMPTS_MAX = 5
RETRY_DELAY_S = 0.5
_SPACES = re.compile(r"\s+")


class ItemRowError(NamedTuple):
    row_number: int
    reason: str
    message: str


@dataclass
class ItemImportSummary:
    rows: int = 0
    created: int = 0
    updated: int = 0
    # Items of requests answered as an earlier run of the same file was (replayed): they
    # were created or updated by that run, not this one.
    already_imported: int = 0
    failed: int = 0
    encoding: str = ""
    errors: list[ItemRowError] = field(default_factory=list)  # by row number
    seconds: float = 0.0

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.already_imported

    def count(self, response: catalog_pb2.UpsertItemsResponse, replayed: bool) -> None:
        if replayed:
            self.already_imported += response.created + response.updated
        else:
            self.created += response.created
            self.updated += response.updated


@dataclass
class ParsedItems:
    rows: int = 0
    encoding: str = ""
    items: list[tuple[int, catalog_pb2.CatalogItem]] = field(default_factory=list)
    errors: list[ItemRowError] = field(default_factory=list)


def _header_key(text: str) -> str:
    return _SPACES.sub("_", str(text).strip().lower().lstrip("\ufeff"))


class _Columns:
    """Where each field's column is; the member price columns by level code."""

    def __init__(self, header: list[Any]) -> None:
        names = {alias: name for name, aliases in FIELD_ALIASES.items() for alias in aliases}
        self.index: dict[str, int] = {}
        self.member_prices: list[tuple[str, int]] = []
        for position, cell in enumerate(header):
            key = _header_key(cell)
            if not key:
                continue
            prefix = next((p for p in MEMBER_PRICE_PREFIXES if key.startswith(p)), None)
            if prefix is not None:
                level = str(cell).strip().lstrip("\ufeff")[len(prefix) :].strip()
                if not level:
                    raise ImportFileError(f"column {position + 1}: {cell!r} names no level")
                self.member_prices.append((level, position))
                continue
            name = names.get(key)
            if name is None:
                raise ImportFileError(
                    f"column {position + 1}: {str(cell)[:40]!r} is not a known column "
                    f"({', '.join(FIELD_ALIASES)}, member_price:LEVEL)"
                )
            if name in self.index:
                raise ImportFileError(f"column {position + 1}: {name} is given twice")
            self.index[name] = position
        missing = [name for name in REQUIRED_FIELDS if name not in self.index]
        if missing:
            raise ImportFileError(f"the header has no {', '.join(missing)} column")

    def cell(self, cells: list[Any], name: str) -> str:
        position = self.index.get(name)
        if position is None or position >= len(cells):
            return ""
        return str(cells[position]).strip()


class _RowProblem(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _yuan_cell(text: str, what: str) -> int:
    try:
        return parse_yuan(text)
    except ValueError as error:
        raise _RowProblem(AMOUNT_INVALID, f"{what}: {error}") from None


def _flag_cell(text: str, what: str) -> bool:
    value = FLAGS.get(text.lower())
    if value is None:
        raise _RowProblem(FLAG_INVALID, f"{what} {text[:40]!r} is not yes/no, true/false or 1/0")
    return value


def _row_item(columns: _Columns, cells: list[Any]) -> catalog_pb2.CatalogItem:
    """The item of one row; raises _RowProblem."""
    if any(len(str(cell)) > CELL_CHARS_MAX for cell in cells):
        raise _RowProblem(CELL_TOO_LONG, f"a cell is longer than {CELL_CHARS_MAX} characters")
    for name in REQUIRED_FIELDS:
        if not columns.cell(cells, name):
            raise _RowProblem(FIELD_MISSING, f"{name} is empty")
    kind = KINDS.get(columns.cell(cells, "kind").lower())
    if kind is None:
        raise _RowProblem(
            KIND_INVALID, f"kind {columns.cell(cells, 'kind')[:40]!r} is not goods or service"
        )
    item = catalog_pb2.CatalogItem(
        sku=columns.cell(cells, "sku"),
        name=columns.cell(cells, "name"),
        category_code=columns.cell(cells, "category"),
        kind=kind,
        retail_price_fen=_yuan_cell(columns.cell(cells, "price"), "price"),
        barcode=columns.cell(cells, "barcode"),
        no_discount=_flag_cell(columns.cell(cells, "no_discount"), "no_discount"),
        track_stock=_flag_cell(columns.cell(cells, "track_stock"), "track_stock"),
        inactive=_flag_cell(columns.cell(cells, "inactive"), "inactive"),
    )
    for level, position in columns.member_prices:
        text = str(cells[position]).strip() if position < len(cells) else ""
        if text:
            price_fen = _yuan_cell(text, f"member_price:{level}")
            item.member_prices.append(catalog_pb2.LevelPrice(level_code=level, price_fen=price_fen))
    return item


def parse_items(path: str) -> ParsedItems:
    """The file's items by row number, and the rows it gets wrong; raises ImportFileError
    for a file that cannot be read at all."""
    _check_size(path)
    parsed = ParsedItems(encoding=_csv_encoding(path))
    rows = _csv_rows(path, CSV_ENCODINGS[parsed.encoding])
    header = next(rows, None)
    if header is None:
        raise ImportFileError(f"{path} is empty: the first row must name the columns")
    columns = _Columns(header[1])
    skus: dict[str, int] = {}
    barcodes: dict[str, int] = {}
    for row_number, cells in rows:
        parsed.rows += 1
        if parsed.rows > ROWS_MAX:
            raise ImportFileError(f"{path} has more than {ROWS_MAX:,} rows: split it")
        try:
            item = _row_item(columns, cells)
            _check_unique(item, row_number, skus, barcodes)
        except _RowProblem as problem:
            parsed.errors.append(ItemRowError(row_number, problem.reason, problem.message))
            continue
        parsed.items.append((row_number, item))
    return parsed


def _check_unique(
    item: catalog_pb2.CatalogItem, row_number: int, skus: dict[str, int], barcodes: dict[str, int]
) -> None:
    if item.sku in skus:
        raise _RowProblem(SKU_DUPLICATE, f"sku {item.sku} is on row {skus[item.sku]} already")
    if item.barcode and item.barcode in barcodes:
        raise _RowProblem(
            BARCODE_DUPLICATE, f"barcode {item.barcode} is on row {barcodes[item.barcode]} already"
        )
    skus[item.sku] = row_number
    if item.barcode:
        barcodes[item.barcode] = row_number


def file_prefix(path: str) -> str:
    """`itm-` and 24 hex digits of the SHA-256 of the import format and the file."""
    _check_size(path)
    digest = hashlib.sha256(IMPORT_FORMAT)
    with open(path, "rb") as file:
        while block := file.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return "itm-" + digest.hexdigest()[:24]


def chunks(
    items: list[tuple[int, catalog_pb2.CatalogItem]],
) -> Iterator[list[tuple[int, catalog_pb2.CatalogItem]]]:
    for start in range(0, len(items), CHUNK_ITEMS):
        yield items[start : start + CHUNK_ITEMS]


# Calls UpsertItems with a request; returns its answer and whether it was replayed (the
# first answer to the same request id, given again); raises grpc.RpcError.
Upsert = Callable[[catalog_pb2.UpsertItemsRequest], tuple[catalog_pb2.UpsertItemsResponse, bool]]


def _call(
    upsert: Upsert, request: catalog_pb2.UpsertItemsRequest
) -> tuple[catalog_pb2.UpsertItemsResponse, bool]:
    """The answer, and whether it is an earlier run's: a replay on a retry of this run may
    be this run's own first attempt, which landed without its answer arriving."""
    delay_s = RETRY_DELAY_S
    for attempt in range(1, CALL_ATTEMPTS_MAX + 1):
        try:
            response, replayed = upsert(request)
            return response, replayed and attempt == 1
        except grpc.RpcError as error:
            if error.code() not in RETRYABLE_CODES or attempt == CALL_ATTEMPTS_MAX:
                raise
            time.sleep(delay_s)
            delay_s *= 2
    raise AssertionError("unreachable: the last attempt returns or raises")


def _is_refusal(error: grpc.RpcError) -> bool:
    """A definite answer about the request's content (not a failure to get one)."""
    return error.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
    )


def import_items(
    upsert: Upsert,
    path: str,
    *,
    request_prefix: str | None,
    reason_of: Callable[[grpc.RpcError], str],
) -> ItemImportSummary:
    """Imports the file; returns what landed and what failed. `reason_of` reads a refusal's
    reason. Raises ImportFileError before anything is sent, and grpc.RpcError when the
    server cannot be reached (the chunks sent stay; a re-run resumes)."""
    started = time.monotonic()
    prefix = request_prefix or file_prefix(path)
    if len(prefix) > REQUEST_PREFIX_CHARS_MAX:
        raise ImportFileError(f"--request-id is longer than {REQUEST_PREFIX_CHARS_MAX} characters")
    parsed = parse_items(path)
    summary = ItemImportSummary(rows=parsed.rows, encoding=parsed.encoding)
    errors = list(parsed.errors)
    for index, chunk in enumerate(chunks(parsed.items)):
        request = catalog_pb2.UpsertItemsRequest(
            request_id=f"{prefix}-{index}", items=[item for _, item in chunk]
        )
        try:
            response, replayed = _call(upsert, request)
        except grpc.RpcError as error:
            if not _is_refusal(error):
                raise
            errors += _row_by_row(upsert, prefix, index, chunk, summary, reason_of)
            continue
        summary.count(response, replayed)
    summary.errors = sorted(errors)
    summary.failed = len(errors)
    summary.seconds = time.monotonic() - started
    return summary


def _row_by_row(
    upsert: Upsert,
    prefix: str,
    index: int,
    chunk: list[tuple[int, catalog_pb2.CatalogItem]],
    summary: ItemImportSummary,
    reason_of: Callable[[grpc.RpcError], str],
) -> list[ItemRowError]:
    """Sends a refused chunk's rows one by one: the good ones land, the bad ones say why."""
    errors = []
    for row_number, item in chunk:
        request = catalog_pb2.UpsertItemsRequest(
            request_id=f"{prefix}-{index}-r{row_number}", items=[item]
        )
        try:
            response, replayed = _call(upsert, request)
        except grpc.RpcError as error:
            if not _is_refusal(error):
                raise
            errors.append(ItemRowError(row_number, reason_of(error), error.details() or ""))
            continue
        summary.count(response, replayed)
    return errors
