"""Bulk member import (会员批量导入) from a CSV or XLSX file, behind `mms member import`.

The file is read whole first (it is bounded: FILE_BYTES_MAX, ROWS_MAX), each row is
checked for what only the file can tell (a missing phone or name, a gender or date that
does not parse, a phone or card number that an earlier row already has) and turned into
a `RegisterMemberRequest`; everything else (attributes, store and card type codes, a
phone already registered) is the core's to check. Phones are written in the one form the
core stores, by the core's own normaliser (`engine._core.canonical_phone`: spaces, dashes
and +86 dropped), so that `+86 138 0013 8000` on one row and `13800138000` on another are
found to be the same phone here, before anything is sent. The good rows then go
in chunks of CHUNK_ROWS rows (fewer if they reach CHUNK_BYTES_MAX) through
`MemberService.ImportMembers`, CHUNKS_IN_FLIGHT calls at a time. The core registers
each row on its own, so a bad row changes nothing and comes back with its index, reason
and message. A referrer (推荐人) column names each row's referrer by phone; a row whose
referrer is another row of the file is sent in a later wave than that row (see
_ChunkBuilder), so that the referrer is always registered first.

Idempotent by construction: chunk i carries the request id `<prefix>-<i>`, and the
prefix defaults to a hash of the file's bytes. Running the same file again (after a
crash, a timeout, or just twice) sends the same chunks under the same ids, and every
chunk already imported answers its first result (the server marks such an answer as
replayed): nothing is registered twice, and the report counts those rows as imported by
an earlier run, apart from the rows this run imported. A row that failed keeps failing
the same way when the same file is imported again; the --errors file holds each failed
row with its cells and why it failed, and is itself a file to import once the rows are
fixed (it has other bytes, so other request ids). A call that fails for a reason that may
pass (UNAVAILABLE, a deadline) is retried with its id; one that still fails, or fails for
any other reason, raises grpc.RpcError: the chunks that landed stay, and running the file
again resumes.

Row numbers are the spreadsheet's: the header is row 1 when it is the first line, and a
row's number is where it sits in the file (blank rows count, and are skipped).

A CSV file is read as UTF-8 (with or without a BOM) when it is valid UTF-8, else as
GB18030 when it is valid GB18030: that is what Chinese Excel's plain "CSV (逗号分隔)" writes
(GBK, of which GB18030 is the superset). Both are checked strictly, over the whole file,
before a row is read; the summary says which was used. A file valid in neither is refused.
"""

from __future__ import annotations

import codecs
import csv
import datetime
import decimal
import hashlib
import math
import os
import re
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TextIO

import grpc

from engine._core import CoreError, canonical_phone
from engine.proto import member_pb2

# Bounds on what one import reads.
FILE_BYTES_MAX = 200 * 1024 * 1024
ROWS_MAX = 1_000_000
CELL_CHARS_MAX = 2_000
ROW_CHARS_MAX = 16_000  # so that an encoded row stays below 64 KiB
COLUMNS_MAX = 256
# Rows per ImportMembers call: the core's limit (rust_core/src/dispatch.rs,
# IMPORT_ROWS_MAX), so that one chunk is one nested transaction per row in one request.
CHUNK_ROWS = 1000
# A chunk is closed early when its rows reach this size: the core keeps each request in
# its request record, which must stay below its RECORD_BYTES_MAX (4 MiB), and the
# client's channel sends at most 4 MiB.
CHUNK_BYTES_MAX = 1024 * 1024
ROW_FRAMING_BYTES = 4  # field tag and length of a row inside the chunk
CHUNKS_IN_FLIGHT = 4
# Rows that refer to a row of the same file go in a later wave than it: a chain of
# referrals in one file is this long at most (each wave waits for the one before).
REFERRAL_WAVES_MAX = 16
# Calls that fail with one of these codes may pass later; the request id makes a retry
# safe even when the first attempt landed.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
CALL_ATTEMPTS_MAX = 5
# The trailing metadata of an answer given again to a retry (engine/server.py,
# REPLAYED_METADATA): the request had been answered before.
REPLAYED_METADATA = ("mms-replayed", "1")
# The columns the --errors file adds in front of the failed rows' own; a file with them is
# imported as any other, the three columns left out.
ERROR_COLUMNS = ("error_row", "error_reason", "error_message")
RETRY_DELAY_S = 0.5  # doubled after each failed attempt
# How a CSV file may be encoded, tried in this order (each strictly, the whole file).
ENCODING_UTF8 = "UTF-8"
ENCODING_GB18030 = "GB18030"
CSV_ENCODINGS = {ENCODING_UTF8: "utf-8-sig", ENCODING_GB18030: "gb18030"}
# Built-in number formats that are dates in Chinese (and Japanese, Korean) Excel: they
# come with no format code in the file, and openpyxl knows only the Western ones (14-22),
# so a 2024年2月29日 cell would read as the number 45351. (32-35, 55 and 56 are times.)
CJK_DATE_FORMAT_IDS = frozenset((*range(27, 32), 36, *range(50, 55), 57, 58))
PROGRESS_STEPS = 10  # lines written to a stream that is not a terminal
PROGRESS_REFRESH_S = 0.2  # least time between two updates of the terminal line
HASH_BLOCK_BYTES = 1024 * 1024
# Part of every default request id: change it when a change to this module could turn
# the same file into different rows, so that a re-run is not refused as a reused id.
IMPORT_FORMAT = b"mms-member-import-v3\n"  # v3: XLSX numbers written exactly, 年月日 dates
# Request ids are at most 64 printable ASCII characters: the prefix, "-", the chunk index.
REQUEST_PREFIX_CHARS_MAX = 48
REQUEST_PREFIX = re.compile(rf"[!-~]{{1,{REQUEST_PREFIX_CHARS_MAX}}}")

# Reasons of rows refused before they are sent. The core's own reasons (PHONE_TAKEN,
# PHONE_MALFORMED, ATTRIBUTE_INVALID, ...) come back as the core gives them.
FIELD_MISSING = "FIELD_MISSING"
GENDER_INVALID = "GENDER_INVALID"
DATE_INVALID = "DATE_INVALID"
PHONE_DUPLICATE = "PHONE_DUPLICATE"
CARD_DUPLICATE = "CARD_DUPLICATE"
REFERRAL_CHAIN_TOO_LONG = "REFERRAL_CHAIN_TOO_LONG"
CELL_TOO_LONG = "CELL_TOO_LONG"
ROW_TOO_LONG = "ROW_TOO_LONG"

# Column names, compared after _header_key; the first of each is the canonical one.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "phone": ("phone", "mobile", "phone_number", "手机", "手机号", "手机号码", "电话"),
    "name": ("name", "姓名", "名字", "会员姓名"),
    "card_no": ("card_no", "card", "card_number", "卡号", "会员卡号"),
    "store_code": ("store_code", "store", "门店", "门店编码", "门店代码"),
    "gender": ("gender", "sex", "性别"),
    "birthday": ("birthday", "birth_date", "生日", "出生日期"),
    "anniversary": ("anniversary", "纪念日"),
    "address": ("address", "地址"),
    "occupation": ("occupation", "job", "职业"),
    "interests": ("interests", "兴趣", "爱好", "兴趣爱好"),
    "groups": ("groups", "group", "分组"),
    "tags": ("tags", "tag", "标签"),
    "staff_code": ("staff_code", "staff", "员工", "员工编号", "经办人"),
    "card_type": ("card_type", "卡类型"),
    "referrer": (
        "referrer",
        "referrer_phone",
        "推荐人",
        "推荐人手机",
        "推荐人手机号",
        "推荐人电话",
    ),
}
REQUIRED_FIELDS = ("phone", "name")
# Fields of RegisterMemberRequest itself, and the text fields of its Profile.
REQUEST_FIELDS = ("phone", "name", "card_no", "store_code", "staff_code", "card_type")
PROFILE_TEXT_FIELDS = ("birthday", "anniversary", "address", "occupation")
ATTRIBUTE_PREFIX = "attr:"
LIST_FIELDS = ("interests", "groups", "tags")
LIST_SEPARATORS = re.compile(r"[;,；，、]")
GENDERS = {
    "male": member_pb2.MALE,
    "m": member_pb2.MALE,
    "男": member_pb2.MALE,
    "男性": member_pb2.MALE,
    "female": member_pb2.FEMALE,
    "f": member_pb2.FEMALE,
    "女": member_pb2.FEMALE,
    "女性": member_pb2.FEMALE,
    "other": member_pb2.OTHER,
    "其他": member_pb2.OTHER,
    "其它": member_pb2.OTHER,
}
# 1990-05-17, 1990/5/17, 1990.5.17, 1990年5月17日, 19900517; a time of 00:00 may follow.
FULL_DATE = re.compile(
    r"(\d{4})(?:[-/.]|年)(\d{1,2})(?:[-/.]|月)(\d{1,2})日?(?:[ T]0{1,2}:00(?::00)?)?"
    r"|(\d{4})(\d{2})(\d{2})"
)
# A birthday without its year: --05-17, 05-17, 5/17, 5月17日.
MONTH_DAY = re.compile(r"(?:--)?(\d{1,2})(?:[-/]|月)(\d{1,2})日?")
LEAP_YEAR = 2000  # checks a month and day without a year, Feb 29 allowed


class ImportFileError(ValueError):
    """The file cannot be imported at all; nothing was sent."""


class RowError(NamedTuple):
    row_number: int
    reason: str
    message: str


@dataclass
class ImportSummary:
    rows: int  # data rows in the file, blank rows left out
    imported: int
    failed: int
    errors: list[RowError] = field(default_factory=list)  # by row number
    seconds: float = 0.0
    encoding: str = ""  # of a CSV file: ENCODING_UTF8 or ENCODING_GB18030; "" for XLSX
    # Rows of chunks an earlier run of the same file had sent, answered again as then:
    # imported by that run, or failed in it (among `failed`, not tried again).
    already_imported: int = 0
    failed_before: int = 0

    def reason_counts(self) -> dict[str, int]:
        """How many rows failed for each reason, the most frequent first."""
        return dict(Counter(error.reason for error in self.errors).most_common())


def import_members(
    stub: Any,
    path: str,
    *,
    metadata: Sequence[tuple[str, str]],
    timeout_s: float,
    request_prefix: str | None = None,
    progress: TextIO | None = sys.stderr,
    errors_out: TextIO | None = None,
) -> ImportSummary:
    """Imports the members of a CSV or XLSX file through `stub` (a MemberServiceStub).

    ImportFileError if the file cannot be imported (nothing is sent); grpc.RpcError if a
    call fails for good (running the same file again resumes, see the module notes).
    """
    started = time.monotonic()
    prefix = request_prefix if request_prefix is not None else _file_prefix(path)
    if not REQUEST_PREFIX.fullmatch(prefix):
        raise ValueError(f"request prefix must be 1-{REQUEST_PREFIX_CHARS_MAX} printable ASCII")
    parsed = _parse_file(path, prefix)
    meter = _Progress(progress, parsed.rows, refused_before_sending=len(parsed.errors))
    summary = ImportSummary(rows=parsed.rows, imported=0, failed=0, encoding=parsed.encoding)
    summary.errors = list(parsed.errors)
    try:
        for chunk, answer in _send_chunks(stub, parsed.chunks, metadata, timeout_s):
            row_errors = _row_errors(chunk, answer.response)
            summary.errors.extend(row_errors)
            if answer.earlier_run:
                summary.already_imported += answer.response.imported
                summary.failed_before += len(row_errors)
            else:
                summary.imported += answer.response.imported
            meter.advance(len(chunk.row_numbers))
    finally:
        meter.finish()
    summary.errors.sort()
    summary.failed = len(summary.errors)
    if errors_out is not None:
        _write_errors(errors_out, path, parsed.encoding, summary.errors)
    summary.seconds = time.monotonic() - started
    return summary


def format_summary(summary: ImportSummary) -> str:
    """One line for people: counts, time, and the reasons rows failed."""
    line = (
        f"imported {summary.imported:,} of {summary.rows:,} rows in {summary.seconds:.1f} s"
        f", {summary.failed:,} failed"
    )
    if summary.encoding:
        line += f", read as {summary.encoding}"
    if summary.already_imported:
        line += f"; already imported by an earlier run of this file: {summary.already_imported:,}"
    if summary.failed:
        reasons = ", ".join(
            f"{reason} {count:,}" for reason, count in summary.reason_counts().items()
        )
        line += f" ({reasons})"
    if summary.failed_before:
        line += f"; {RETRY_HINT}"
    return line


# What to do about rows that failed: importing the same file again only repeats them.
RETRY_HINT = (
    "rows that failed fail again when this file is imported again: fix them in the "
    "--errors file and import that file"
)


# --- reading the file -----------------------------------------------------------------


@dataclass
class _Chunk:
    index: int
    row_numbers: list[int]
    request: bytes  # an encoded ImportMembersRequest, decoded only when sent
    wave: int = 0  # sent once every chunk of the waves before it is answered


@dataclass
class _Parsed:
    rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    chunks: list[_Chunk] = field(default_factory=list)
    encoding: str = ""


def _file_prefix(path: str) -> str:
    """`imp-` and 24 hex digits of the SHA-256 of the import format and the file."""
    _check_size(path)
    digest = hashlib.sha256(IMPORT_FORMAT)
    with open(path, "rb") as file:
        while block := file.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return "imp-" + digest.hexdigest()[:24]


def _check_size(path: str) -> None:
    try:
        size = os.stat(path).st_size
    except OSError as error:
        raise ImportFileError(f"cannot read {path}: {error.strerror}") from error
    if size > FILE_BYTES_MAX:
        raise ImportFileError(f"{path} is {size:,} bytes, above the limit of {FILE_BYTES_MAX:,}")


def _parse_file(path: str, prefix: str) -> _Parsed:
    _check_size(path)
    parsed = _Parsed()
    if _is_xlsx(path):
        rows = _xlsx_rows(path)
    else:
        parsed.encoding = _csv_encoding(path)
        rows = _csv_rows(path, CSV_ENCODINGS[parsed.encoding])
    header_row = next(rows, None)
    if header_row is None:
        raise ImportFileError(f"{path} is empty: the first row must name the columns")
    columns = _Columns(header_row[1])
    builder = _ChunkBuilder(prefix)
    for row_number, cells in rows:
        parsed.rows += 1
        if parsed.rows > ROWS_MAX:
            raise ImportFileError(f"{path} has more than {ROWS_MAX:,} rows: split it")
        outcome = _row_request(columns, row_number, cells)
        if isinstance(outcome, RowError):
            parsed.errors.append(outcome)
            continue
        refusal = builder.refusal(row_number, outcome) or builder.add(row_number, outcome)
        if refusal is not None:
            parsed.errors.append(refusal)
    parsed.chunks, late_errors = builder.finish()
    parsed.errors.extend(late_errors)
    return parsed


def _is_xlsx(path: str) -> bool:
    extension = os.path.splitext(path)[1].lower()
    if extension in (".xlsx", ".xlsm"):
        return True
    if extension == ".csv":
        return False
    return zipfile.is_zipfile(path)  # an XLSX file is a ZIP archive


def _csv_encoding(path: str) -> str:
    """The first of CSV_ENCODINGS the whole file is valid in, decoded strictly."""
    for name, codec in CSV_ENCODINGS.items():
        decoder = codecs.getincrementaldecoder(codec)("strict")
        try:
            with open(path, "rb") as file:
                while block := file.read(HASH_BLOCK_BYTES):
                    decoder.decode(block)
                decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            continue
        except OSError as error:
            raise ImportFileError(f"cannot read {path}: {error.strerror}") from error
        return name
    tried = " nor ".join(CSV_ENCODINGS)
    raise ImportFileError(f"{path} is neither {tried} text: save it as CSV UTF-8")


def _csv_rows(path: str, codec: str) -> Iterator[tuple[int, list[Any]]]:
    """(record number, cells) of each non-blank record; a BOM is dropped."""
    try:
        with open(path, encoding=codec, newline="") as file:
            first_line = file.readline()
            file.seek(0)
            reader = csv.reader(file, delimiter=_delimiter(first_line))
            for row_number, cells in enumerate(reader, 1):
                if any(cell.strip() for cell in cells):
                    yield row_number, cells
    except UnicodeDecodeError as error:  # _csv_encoding found it valid: it changed since
        raise ImportFileError(f"{path} changed while it was read ({error.reason})") from error
    except csv.Error as error:
        raise ImportFileError(f"{path} is not a CSV file: {error}") from error


def _delimiter(header_line: str) -> str:
    """Comma, unless the header is plainly separated by tabs or semicolons."""
    counts = {delimiter: header_line.count(delimiter) for delimiter in (",", "\t", ";")}
    return max(counts, key=lambda delimiter: (counts[delimiter], delimiter == ","))


def _xlsx_rows(path: str) -> Iterator[tuple[int, list[Any]]]:
    """(sheet row number, cells) of each non-blank row of the first sheet."""
    import openpyxl  # only XLSX imports need it
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError) as error:
        raise ImportFileError(f"{path} is not an XLSX workbook: {error}") from error
    try:
        _recognise_cjk_dates(workbook)
        sheet = workbook.worksheets[0]
        # Some writers store a wrong used range; without it every row is read as it is.
        sheet.reset_dimensions()
        for row_number, cells in enumerate(sheet.iter_rows(values_only=True), 1):
            if any(cell is not None and str(cell).strip() for cell in cells):
                yield row_number, list(cells)
    finally:
        workbook.close()


def _recognise_cjk_dates(workbook: Any) -> None:
    """Marks the cell styles with a CJK built-in date format as dates, as openpyxl does
    for the Western ones when it loads the workbook. Uses openpyxl's private style index
    (checked by tests/test_import.py); without it, such cells stay numbers."""
    styles = getattr(workbook, "_cell_styles", None)
    date_styles = getattr(workbook, "_date_formats", None)
    if styles is None or not isinstance(date_styles, set):
        return
    for index, style in enumerate(styles):
        if getattr(style, "numFmtId", None) in CJK_DATE_FORMAT_IDS:
            date_styles.add(index)


# --- columns and rows -----------------------------------------------------------------


def _header_key(text: str) -> str:
    return re.sub(r"[\s-]+", "_", text.strip().lower())


_FIELD_BY_ALIAS = {
    _header_key(alias): name for name, aliases in FIELD_ALIASES.items() for alias in aliases
}


class _Columns:
    """Which column holds which field, from the header row."""

    def __init__(self, header: list[Any]) -> None:
        if len(header) > COLUMNS_MAX:
            raise ImportFileError(f"the header has {len(header)} columns, at most {COLUMNS_MAX}")
        self.fields: list[tuple[int, str]] = []  # (position, field name)
        self.attributes: list[tuple[int, str]] = []  # (position, attribute code)
        unknown: list[str] = []
        labels: set[str] = set()
        for position, cell in enumerate(header):
            text = _cell_text(cell)
            if not text or _header_key(text) in ERROR_COLUMNS:
                continue  # a column without a name (trailing separators), or an --errors one
            key = _header_key(text)
            if key.startswith(ATTRIBUTE_PREFIX):
                code = text.split(":", 1)[1].strip()
                label, columns = ATTRIBUTE_PREFIX + code, self.attributes
            else:
                code = label = _FIELD_BY_ALIAS.get(key, "")
                columns = self.fields
            if not code:
                unknown.append(text)
                continue
            if label in labels:
                raise ImportFileError(f"column {label} appears twice in the header")
            labels.add(label)
            columns.append((position, code))
        if unknown:
            raise ImportFileError(
                f"unknown column(s) {', '.join(unknown)}: the columns are "
                f"{', '.join(FIELD_ALIASES)}, or {ATTRIBUTE_PREFIX}<code> for a custom attribute"
            )
        missing = [name for name in REQUIRED_FIELDS if name not in labels]
        if missing:
            raise ImportFileError(f"the header has no {' or '.join(missing)} column")


def _cell_text(value: Any) -> str:
    """A cell as text, the same in every column (fields and attr: ones): numbers as
    written (no exponent, whole numbers without .0), dates as YYYY-MM-DD (with the time
    when it is not 00:00)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, datetime.datetime):
        if value.time() == datetime.time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def _number_text(value: float) -> str:
    """A spreadsheet number as people wrote it: the shortest decimal that is this float
    (what Excel shows), in plain notation: 1e-05 is 0.00001, 40.0 is 40, 1e+20 is
    100000000000000000000. Never through float formatting, which turns to exponents."""
    if not math.isfinite(value):
        return str(value)  # not a number a cell holds; the core refuses it where it matters
    text = format(decimal.Decimal(repr(value)), "f")
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return "0" if text == "-0" else text


def _row_request(columns: _Columns, row_number: int, cells: list[Any]) -> dict[str, Any] | RowError:
    """The fields of the RegisterMemberRequest a row makes (only those set, as keyword
    arguments, which is the quickest way to build the message), or why it makes none."""
    width = len(cells)
    values = {
        name: _cell_text(cells[position]) if position < width else ""
        for position, name in columns.fields
    }
    attributes = {}
    for position, code in columns.attributes:
        text = _cell_text(cells[position]) if position < width else ""
        if text:
            attributes[code] = text
    row_chars = 0
    for name, text in (*values.items(), *attributes.items()):
        if len(text) > CELL_CHARS_MAX:
            message = f"{name} is longer than {CELL_CHARS_MAX} characters"
            return RowError(row_number, CELL_TOO_LONG, message)
        row_chars += len(text)
    if row_chars > ROW_CHARS_MAX:
        message = f"the row holds {row_chars:,} characters, at most {ROW_CHARS_MAX:,}"
        return RowError(row_number, ROW_TOO_LONG, message)
    missing = [name for name in REQUIRED_FIELDS if not values[name]]
    if missing:
        return RowError(row_number, FIELD_MISSING, f"{' and '.join(missing)} is empty")
    try:
        phone = _phone(values["phone"])
        referrer = _phone(values["referrer"], "referrer") if values.get("referrer") else ""
        profile = _profile(values, attributes)
    except _RowProblem as problem:
        return RowError(row_number, problem.reason, problem.message)
    request = {name: values[name] for name in REQUEST_FIELDS if values.get(name)}
    request["phone"] = phone
    if referrer:
        request["referrer"] = {"phone": referrer}
    if profile:
        request["profile"] = profile
    return request


class _RowProblem(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _profile(values: dict[str, str], attributes: dict[str, str]) -> dict[str, Any]:
    """The Profile fields a row sets."""
    profile: dict[str, Any] = {
        name: values[name] for name in PROFILE_TEXT_FIELDS if values.get(name)
    }
    if values.get("gender"):
        profile["gender"] = _gender(values["gender"])
    if "birthday" in profile:
        profile["birthday"] = _date(profile["birthday"], "birthday", year_optional=True)
    if "anniversary" in profile:
        profile["anniversary"] = _date(profile["anniversary"], "anniversary", year_optional=False)
    for name in LIST_FIELDS:
        if values.get(name):
            entries = [entry.strip() for entry in LIST_SEPARATORS.split(values[name])]
            profile[name] = [entry for entry in entries if entry]
    if attributes:
        profile["attributes"] = attributes
    return profile


def _phone(text: str, what: str = "") -> str:
    """The phone as the core stores it, or the core's reason why it is none."""
    try:
        return canonical_phone(text)
    except CoreError as error:
        message = f"{what}: {error.message}" if what else error.message
        raise _RowProblem(error.reason, message) from None


def _gender(text: str) -> int:
    gender = GENDERS.get(text.lower())
    if gender is None:
        raise _RowProblem(GENDER_INVALID, f"gender {text!r} is not male, female, other, 男 or 女")
    return gender


def _date(text: str, what: str, *, year_optional: bool) -> str:
    """YYYY-MM-DD, or --MM-DD for a birthday without its year."""
    match = FULL_DATE.fullmatch(text)
    if match is not None:
        year, month, day = (int(part) for part in match.groups() if part is not None)
        _check_date(text, what, year, month, day)
        return f"{year:04d}-{month:02d}-{day:02d}"
    match = MONTH_DAY.fullmatch(text) if year_optional else None
    if match is not None:
        month, day = int(match.group(1)), int(match.group(2))
        _check_date(text, what, LEAP_YEAR, month, day)
        return f"--{month:02d}-{day:02d}"
    shapes = "YYYY-MM-DD or MM-DD" if year_optional else "YYYY-MM-DD"
    raise _RowProblem(DATE_INVALID, f"{what} {text!r} is not a date ({shapes})")


def _check_date(text: str, what: str, year: int, month: int, day: int) -> None:
    try:
        datetime.date(year, month, day)
    except ValueError as error:
        raise _RowProblem(DATE_INVALID, f"{what} {text!r} is not a date: {error}") from None


@dataclass
class _OpenChunk:
    """The rows of a wave collected so far, not yet a chunk."""

    row_numbers: list[int] = field(default_factory=list)
    request: member_pb2.ImportMembersRequest = field(
        default_factory=member_pb2.ImportMembersRequest
    )
    request_bytes: int = 0


class _ChunkBuilder:
    """Collects the good rows into chunks, and refuses a phone or card number that an
    earlier row already has (which of two rows wins must not depend on which chunk
    lands first).

    A row whose referrer (推荐人) is another row of the file goes in a later wave than that
    row: every chunk of a wave is answered before the next wave is sent, so the referrer
    is registered first whichever order the chunks of a wave land in. A row whose
    referrer is on a later row waits until the end of the file to know its wave."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.chunks: list[_Chunk] = []
        self.open: dict[int, _OpenChunk] = {}  # by wave
        self.phone_rows: dict[str, int] = {}
        self.card_rows: dict[str, int] = {}
        self.phone_waves: dict[str, int] = {}
        self.waiting: list[tuple[int, dict[str, Any]]] = []  # referrer on a later row

    def refusal(self, row_number: int, fields: dict[str, Any]) -> RowError | None:
        phone, card_no = fields["phone"], fields.get("card_no")
        first = self.phone_rows.get(phone)
        if first is not None:
            return RowError(row_number, PHONE_DUPLICATE, f"phone {phone} is also on row {first}")
        first = self.card_rows.get(card_no) if card_no else None
        if first is not None:
            message = f"card number {card_no} is also on row {first}"
            return RowError(row_number, CARD_DUPLICATE, message)
        return None

    def add(self, row_number: int, fields: dict[str, Any]) -> RowError | None:
        self.phone_rows[fields["phone"]] = row_number
        if "card_no" in fields:
            self.card_rows[fields["card_no"]] = row_number
        referrer = fields.get("referrer", {}).get("phone")
        if referrer is None:
            return self._place(row_number, fields, 0)
        if referrer in self.phone_waves:
            return self._place(row_number, fields, self.phone_waves[referrer] + 1)
        self.waiting.append((row_number, fields))
        return None

    def finish(self) -> tuple[list[_Chunk], list[RowError]]:
        """The chunks, and the rows refused because their referral chain is too long."""
        errors = self._place_waiting()
        for wave in sorted(self.open):
            if self.open[wave].row_numbers:
                self._close_chunk(wave)
        return self.chunks, errors

    def _place_waiting(self) -> list[RowError]:
        """Places the rows whose referrer came later in the file, each a wave after its
        referrer (the first wave when the referrer is no good row of the file: the core
        decides). A wave at a time, so this ends: what is left after the last wave refers
        in a circle or too deep, and is refused."""
        errors = []
        for _ in range(REFERRAL_WAVES_MAX):
            placeable, self.waiting = self._split_waiting()
            for row_number, fields in placeable:
                wave = self.phone_waves.get(fields["referrer"]["phone"], -1) + 1
                error = self._place(row_number, fields, wave)
                if error is not None:
                    errors.append(error)
            if not placeable:
                break
        for row_number, fields in self.waiting:
            errors.append(_chain_too_long(row_number, fields["referrer"]["phone"]))
        self.waiting = []
        return errors

    def _split_waiting(self) -> tuple[list[tuple[int, dict[str, Any]]], list[Any]]:
        """(the waiting rows whose wave is known now, the others)."""
        placeable, still = [], []
        for row_number, fields in self.waiting:
            referrer = fields["referrer"]["phone"]
            known = referrer in self.phone_waves or referrer not in self.phone_rows
            (placeable if known else still).append((row_number, fields))
        return placeable, still

    def _place(self, row_number: int, fields: dict[str, Any], wave: int) -> RowError | None:
        if wave >= REFERRAL_WAVES_MAX:
            return _chain_too_long(row_number, fields["referrer"]["phone"])
        self.phone_waves[fields["phone"]] = wave
        chunk = self.open.setdefault(wave, _OpenChunk())
        chunk.row_numbers.append(row_number)
        chunk.request_bytes += chunk.request.rows.add(**fields).ByteSize() + ROW_FRAMING_BYTES
        if len(chunk.row_numbers) == CHUNK_ROWS or chunk.request_bytes >= CHUNK_BYTES_MAX:
            self._close_chunk(wave)
        return None

    def _close_chunk(self, wave: int) -> None:
        chunk = self.open.pop(wave)
        index = len(self.chunks)
        chunk.request.request_id = f"{self.prefix}-{index}"
        request = chunk.request.SerializeToString()
        self.chunks.append(_Chunk(index, chunk.row_numbers, request, wave))


def _chain_too_long(row_number: int, referrer: str) -> RowError:
    message = (
        f"referrer {referrer} is reached through more than {REFERRAL_WAVES_MAX} referrals in "
        "this file, or they go round in a circle: import this row again once the others are in"
    )
    return RowError(row_number, REFERRAL_CHAIN_TOO_LONG, message)


# --- sending --------------------------------------------------------------------------


class _Answer(NamedTuple):
    response: member_pb2.ImportMembersResponse
    # Answered as an earlier run of the file was: its first answer, replayed, and no
    # attempt of this run can have been the first (one that timed out may have landed).
    earlier_run: bool


def _send_chunks(
    stub: Any, chunks: list[_Chunk], metadata: Sequence[tuple[str, str]], timeout_s: float
) -> Iterator[tuple[_Chunk, _Answer]]:
    """Each chunk with its response as they come, CHUNKS_IN_FLIGHT calls at a time, a
    wave after the other."""
    if not chunks:
        return
    pool = ThreadPoolExecutor(max_workers=CHUNKS_IN_FLIGHT, thread_name_prefix="mms-import")
    try:
        for wave in sorted({chunk.wave for chunk in chunks}):
            pending: dict[Future[_Answer], _Chunk] = {
                pool.submit(_send_chunk, stub, chunk, metadata, timeout_s): chunk
                for chunk in chunks
                if chunk.wave == wave
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    chunk = pending.pop(future)
                    yield chunk, future.result()  # a failed call raises here
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _send_chunk(
    stub: Any, chunk: _Chunk, metadata: Sequence[tuple[str, str]], timeout_s: float
) -> _Answer:
    request = member_pb2.ImportMembersRequest.FromString(chunk.request)
    delay_s = RETRY_DELAY_S
    for attempt in range(1, CALL_ATTEMPTS_MAX + 1):
        try:
            response, call = stub.ImportMembers.with_call(
                request, timeout=timeout_s, metadata=metadata
            )
        except grpc.RpcError as error:
            if error.code() not in RETRYABLE_CODES or attempt == CALL_ATTEMPTS_MAX:
                raise
            time.sleep(delay_s)
            delay_s *= 2
            continue
        _check_response(chunk, response)
        replayed = REPLAYED_METADATA in tuple(call.trailing_metadata() or ())
        return _Answer(response, earlier_run=replayed and attempt == 1)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _check_response(chunk: _Chunk, response: member_pb2.ImportMembersResponse) -> None:
    """The server answers every row once, by its index; anything else is a bug there."""
    indexes = sorted(result.index for result in response.results)
    if indexes != list(range(len(chunk.row_numbers))):
        raise RuntimeError(
            f"ImportMembers answered rows {indexes[:5]}... for a chunk of "
            f"{len(chunk.row_numbers)} rows (request {chunk.index})"
        )


def _row_errors(chunk: _Chunk, response: member_pb2.ImportMembersResponse) -> list[RowError]:
    return [
        RowError(chunk.row_numbers[result.index], result.error_reason, result.error_message)
        for result in response.results
        if result.error_reason
    ]


def _write_errors(out: TextIO, path: str, encoding: str, errors: list[RowError]) -> None:
    """Each failed row, in file order: its number, reason and message, then its own cells
    as the file has them (a file to fix and import). The file is read again for them."""
    writer = csv.writer(out)
    failed = {error.row_number: error for error in errors}
    rows = _xlsx_rows(path) if not encoding else _csv_rows(path, CSV_ENCODINGS[encoding])
    _, header = next(rows)
    kept = [
        i for i, cell in enumerate(header) if _header_key(_cell_text(cell)) not in ERROR_COLUMNS
    ]
    writer.writerow([*ERROR_COLUMNS, *(_cell_text(header[i]) for i in kept)])
    for row_number, cells in rows:
        error = failed.get(row_number)
        if error is not None:
            own = [_cell_text(cells[i]) if i < len(cells) else "" for i in kept]
            writer.writerow([row_number, error.reason, error.message, *own])


class _Progress:
    """Rows done of the total: one line kept up to date on a terminal, else a line at
    each tenth. The rows refused before sending are done from the start; the rate is
    that of the rows the server answers, since sending began."""

    def __init__(
        self,
        stream: TextIO | None,
        total: int,
        *,
        refused_before_sending: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.total = total
        self.refused = refused_before_sending
        self.done = refused_before_sending
        self.clock = clock
        self.started = clock()
        self.terminal = stream is not None and stream.isatty()
        self.steps_written = self.done * PROGRESS_STEPS // total if total else 0
        self.refreshed = 0.0

    def advance(self, rows: int) -> None:
        self.done += rows
        if self.stream is None or self.total == 0:
            return
        if self.terminal:
            now = self.clock()
            if now - self.refreshed >= PROGRESS_REFRESH_S or self.done == self.total:
                self.refreshed = now
                self.stream.write("\r" + self._line())
                self.stream.flush()
            return
        step = self.done * PROGRESS_STEPS // self.total
        if step > self.steps_written:
            self.steps_written = step
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.stream is not None and self.terminal and self.total:
            self.stream.write("\r" + self._line() + "\n")
            self.stream.flush()

    def _line(self) -> str:
        elapsed_s = max(self.clock() - self.started, 1e-6)
        percent = self.done * 100 // self.total
        rate = int((self.done - self.refused) / elapsed_s)
        return f"import: {self.done:,}/{self.total:,} rows ({percent}%), {rate:,} rows/s"
