"""Bulk member import (engine/importer.py) against the real server: the good rows land,
every bad row is reported with its spreadsheet row number and reason, and running the
same file again changes nothing."""

from __future__ import annotations

import csv
import datetime
import io
import re
import time
import zipfile
from pathlib import Path

import grpc
import openpyxl
import pytest

from client import DEMO_CONFIG, TIMEOUT_S, Client
from conftest import RunningServer
from engine import importer
from engine.importer import ImportFileError, ImportSummary, RowError, import_members
from engine.proto import config_pb2, member_pb2

EXISTING_PHONE = "13900000000"
HEADER = ["手机", "姓名", "卡号", "性别", "生日", "标签", "attr:skin", "attr:colour"]
# Row 1 is the header; row 10 is blank. phone is a str here; the XLSX test writes the
# phones as numbers and the dates as dates, as a spreadsheet would.
ROWS = {
    2: ["13800000001", "张三", "", "男", "1990-05-17", "vip; 老客户", "dry", ""],
    3: ["1380000", "李四", "", "", "", "", "", ""],  # not a mobile number
    4: ["13800000003", "王五", "CARD0003", "女", "05-17", "", "", ""],
    5: ["13800000001", "赵六", "", "", "", "", "", ""],  # row 2's phone
    6: [EXISTING_PHONE, "钱七", "", "", "", "", "", ""],  # already a member
    7: ["13800000007", "孙八", "", "", "1990-02-30", "", "", ""],  # no such date
    8: ["13800000008", "", "", "", "", "", "", ""],  # no name
    9: ["13800000009", "周九", "", "", "", "", "", "red"],  # attribute not configured
    11: ["13800000011", "吴十一", "", "other", "2000/1/2", "", "oily", ""],
}
EXPECTED_ERRORS = [
    (3, "PHONE_MALFORMED"),
    (5, "PHONE_DUPLICATE"),
    (6, "PHONE_TAKEN"),
    (7, "DATE_INVALID"),
    (8, "FIELD_MISSING"),
    (9, "FIELD_UNKNOWN"),
]
BIG_ROWS = 100_000
FIRST_BIG_PHONE = 13_000_000_000


def import_config() -> config_pb2.MerchantConfig:
    config = config_pb2.MerchantConfig()
    config.CopyFrom(DEMO_CONFIG)
    config.attributes.add(code="skin", name="肤质", type=config_pb2.CHOICE, choices=["dry", "oily"])
    return config


def write_csv(path: Path) -> Path:
    with open(path, "w", encoding="utf-8-sig", newline="") as file:  # with a BOM, as Excel
        writer = csv.writer(file)
        writer.writerow(HEADER)
        for row_number in range(2, max(ROWS) + 1):
            writer.writerow(ROWS.get(row_number, []))
    return path


def write_xlsx(path: Path) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(HEADER)
    for row_number in range(2, max(ROWS) + 1):
        cells: list[object] = list(ROWS.get(row_number, []))
        if cells and cells[0].isdigit():
            cells[0] = int(cells[0])
        if cells and cells[4] == "1990-05-17":
            cells[4] = datetime.date(1990, 5, 17)
        sheet.append(cells)
    workbook.save(path)
    return path


def run_import(
    client: Client, path: Path, progress: io.StringIO | None = None
) -> tuple[ImportSummary, str]:
    errors_out = io.StringIO()
    summary = import_members(
        client.members,
        str(path),
        metadata=client.metadata,
        timeout_s=TIMEOUT_S,
        progress=progress,
        errors_out=errors_out,
    )
    return summary, errors_out.getvalue()


def member_or_none(client: Client, **key: object) -> member_pb2.Member | None:
    try:
        return client.get(**key).member
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND, error
        return None


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_good_rows_land_and_bad_rows_are_reported(
    server: RunningServer, tmp_path: Path, kind: str
) -> None:
    path = (write_csv if kind == "csv" else write_xlsx)(tmp_path / f"members.{kind}")
    with server.channel() as channel:
        client = Client(channel)
        client.apply(import_config())
        client.register(EXISTING_PHONE, "老会员")
        progress = io.StringIO()
        summary, errors_csv = run_import(client, path, progress)

        assert (summary.rows, summary.imported, summary.failed) == (9, 3, 6)
        assert [(error.row_number, error.reason) for error in summary.errors] == EXPECTED_ERRORS
        assert summary.reason_counts()["PHONE_TAKEN"] == 1
        assert "row 2" in summary.errors[1].message  # the duplicate names the first row
        written = list(csv.reader(io.StringIO(errors_csv)))
        assert written[0] == ["error_row", "error_reason", "error_message", *HEADER]
        assert [(int(row[0]), row[1]) for row in written[1:]] == EXPECTED_ERRORS
        # each failed row with its own cells, as the file has them
        assert written[4][3:] == ["13800000007", "孙八", "", "", "1990-02-30", "", "", ""]
        assert progress.getvalue().splitlines()[-1].startswith("import: 9/9 rows (100%)")

        first = client.get(phone="13800000001")
        assert (first.member.member_id, first.member.name) == (2, "张三")
        assert first.member.gender == member_pb2.MALE
        assert first.member.birthday == "1990-05-17"
        assert list(first.member.tags) == ["vip", "老客户"]
        assert dict(first.member.attributes) == {"skin": "dry"}
        assert [card.card_no for card in first.cards] == ["E0000000002"]
        third = client.get(card_no="CARD0003").member
        assert (third.phone, third.gender, third.birthday) == (
            "13800000003",
            member_pb2.FEMALE,
            "--05-17",
        )
        last = client.get(phone="13800000011").member
        assert (last.member_id, last.gender, last.birthday) == (4, member_pb2.OTHER, "2000-01-02")
        assert client.get(phone=EXISTING_PHONE).member.name == "老会员"
        for phone in ("13800000007", "13800000008", "13800000009"):
            assert member_or_none(client, phone=phone) is None
        assert member_or_none(client, member_id=5) is None

        again, errors_again = run_import(client, path)
        assert (again.rows, again.imported, again.already_imported) == (9, 0, 3)
        assert (again.failed, again.failed_before) == (6, 2)  # rows 6 and 9, sent before
        assert again.errors == summary.errors
        assert errors_again == errors_csv
        assert member_or_none(client, member_id=5) is None  # nothing registered twice
        line = importer.format_summary(again)
        assert "already imported by an earlier run of this file: 3" in line
        assert line.endswith("fix them in the --errors file and import that file")
        assert "earlier run" not in importer.format_summary(summary)


def test_a_chosen_prefix_makes_the_request_ids(server: RunningServer, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "members.csv")
    with server.channel() as channel:
        client = Client(channel)
        client.apply(import_config())

        def once(prefix: str) -> ImportSummary:
            return import_members(
                client.members,
                str(path),
                metadata=client.metadata,
                timeout_s=TIMEOUT_S,
                request_prefix=prefix,
                progress=None,
            )

        assert once("batch-1").imported == 4  # row 6's phone is free on this server
        same = once("batch-1")  # the same ids: the first answers, marked as such
        assert (same.imported, same.already_imported) == (0, 4)
        rerun = once("batch-2")  # new ids: every row is tried again, and is taken
        assert rerun.imported == 0
        assert rerun.reason_counts()["PHONE_TAKEN"] == 4


def test_100k_rows(server: RunningServer, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["phone", "name", "gender", "tags"])
        for index in range(BIG_ROWS):
            writer.writerow([FIRST_BIG_PHONE + index, f"会员{index}", "女", "导入"])
    with server.channel() as channel:
        client = Client(channel)
        client.apply(import_config())
        started = time.monotonic()
        summary, _ = run_import(client, path)
        seconds = time.monotonic() - started
        print(f"imported {summary.imported:,} rows in {seconds:.1f} s")  # seen with -s
        assert (summary.rows, summary.imported, summary.failed) == (BIG_ROWS, BIG_ROWS, 0)
        for index in (0, 4_321, BIG_ROWS - 1):
            member = client.get(phone=str(FIRST_BIG_PHONE + index)).member
            assert member.name == f"会员{index}"
        assert client.get(member_id=BIG_ROWS).member.member_id == BIG_ROWS
        assert member_or_none(client, member_id=BIG_ROWS + 1) is None


# --- files that cannot be imported (nothing is sent: no server needed) ---------------


def parse_error(path: Path) -> str:
    with pytest.raises(ImportFileError) as caught:
        import_members(None, str(path), metadata=(), timeout_s=1, progress=None)
    return str(caught.value)


def test_unknown_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "members.csv"
    path.write_text("phone,name,余额\n13800000001,张三,100\n", encoding="utf-8")
    assert "unknown column(s) 余额" in parse_error(path)


def test_missing_required_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "members.csv"
    path.write_text("手机号,卡号\n13800000001,C1\n", encoding="utf-8")
    assert parse_error(path) == "the header has no name column"


def test_empty_files_and_files_in_no_known_encoding_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n", encoding="utf-8")
    assert "is empty" in parse_error(empty)
    neither = tmp_path / "latin1.csv"
    # Valid Latin-1, but neither UTF-8 nor GB18030 (0x80 and 0xFF start nothing in GB18030).
    neither.write_bytes("phone,name\n13800000001,Zo\xeb\x80\n13800000002,\xff\n".encode("latin-1"))
    assert (
        parse_error(neither) == f"{neither} is neither UTF-8 nor GB18030 text: save it as CSV UTF-8"
    )


def test_a_gbk_file_as_chinese_excel_saves_it(server: RunningServer, tmp_path: Path) -> None:
    """Excel's plain "CSV (逗号分隔)" on a Chinese Windows writes GBK."""
    path = tmp_path / "gbk.csv"
    text = (
        "手机号,姓名,性别,标签\r\n13800000001,张三,男,老客户；vip\r\n13800000002,欧阳娜娜,女,\r\n"
    )
    path.write_bytes(text.encode("gbk"))
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")
    with server.channel() as channel:
        client = Client(channel)
        client.apply(import_config())
        summary, _ = run_import(client, path)
        assert (summary.imported, summary.failed, summary.encoding) == (2, 0, "GB18030")
        assert importer.format_summary(summary).endswith(", 0 failed, read as GB18030")
        first = client.get(phone="13800000001").member
        assert (first.name, list(first.tags)) == ("张三", ["老客户", "vip"])
        assert client.get(phone="13800000002").member.name == "欧阳娜娜"
    utf8 = tmp_path / "utf8.csv"
    utf8.write_text(text, encoding="utf-8-sig")
    assert importer._parse_file(str(utf8), "p").encoding == "UTF-8"


def test_too_many_rows_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "ROWS_MAX", 2)
    path = tmp_path / "members.csv"
    path.write_text("phone,name\n" + "13800000001,a\n" * 3, encoding="utf-8")
    assert "more than 2 rows" in parse_error(path)


def test_rows_refused_before_sending_are_never_sent(tmp_path: Path) -> None:
    """A file whose every row fails in Python needs no server."""
    path = tmp_path / "members.csv"
    path.write_text("phone,name,gender\n13800000001,,\n13800000002,b,x\n", encoding="utf-8")
    summary = import_members(None, str(path), metadata=(), timeout_s=1, progress=None)
    assert summary.errors == [
        RowError(2, "FIELD_MISSING", "name is empty"),
        RowError(3, "GENDER_INVALID", "gender 'x' is not male, female, other, 男 or 女"),
    ]
    assert importer.format_summary(summary).startswith("imported 0 of 2 rows in ")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_one_line_kept_up_to_date() -> None:
    terminal = Terminal()
    meter = importer._Progress(terminal, 2_000)
    meter.advance(1_000)
    meter.advance(1_000)
    meter.finish()
    updates = terminal.getvalue().split("\r")[1:]
    assert updates[0].startswith("import: 1,000/2,000 rows (50%), ")
    assert updates[-1].startswith("import: 2,000/2,000 rows (100%), ")
    assert updates[-1].endswith(" rows/s\n")
    assert all("\n" not in update for update in updates[:-1])


def test_progress_elsewhere_is_a_line_per_tenth() -> None:
    stream = io.StringIO()
    meter = importer._Progress(stream, 1_000)
    for _ in range(40):
        meter.advance(25)
    meter.finish()
    lines = stream.getvalue().splitlines()
    assert [line.split(" rows")[0] for line in lines] == [
        f"import: {done:,}/1,000" for done in range(100, 1_001, 100)
    ]


def test_the_rate_counts_only_the_rows_sent() -> None:
    """Rows refused before sending are done at once; they do not make the rate."""
    now = [100.0]
    stream = io.StringIO()
    meter = importer._Progress(stream, 1_000, refused_before_sending=900, clock=lambda: now[0])
    assert stream.getvalue() == ""  # nothing to say before anything was sent
    now[0] += 2.0
    meter.advance(100)
    assert stream.getvalue() == "import: 1,000/1,000 rows (100%), 50 rows/s\n"


def test_big_rows_close_a_chunk_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "CHUNK_BYTES_MAX", 10_000)
    path = tmp_path / "members.csv"
    address = "路" * 1_000  # 3,000 bytes of UTF-8
    rows = "".join(f"1380000{index:04d},会员,{address}\n" for index in range(10))
    path.write_text("phone,name,address\n" + rows, encoding="utf-8")
    parsed = importer._parse_file(str(path), "p")
    assert [chunk.row_numbers for chunk in parsed.chunks] == [
        [2, 3, 4, 5], [6, 7, 8, 9], [10, 11],
    ]  # fmt: skip
    assert all(len(chunk.request) < 13_100 for chunk in parsed.chunks)


# --- phones: the core's one rule -------------------------------------------------------

PHONE_CASES = Path(__file__).resolve().parent / "phone_cases.tsv"


def phone_cases() -> list[tuple[str, str]]:
    """(typed, canonical or PHONE_MALFORMED) from the table the core's tests read too."""
    lines = PHONE_CASES.read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t", 1)) for line in lines if line and not line.startswith("#")]  # type: ignore[misc]


@pytest.mark.parametrize(("typed", "expected"), phone_cases())
def test_the_importer_writes_phones_as_the_core_does(typed: str, expected: str) -> None:
    if expected == "PHONE_MALFORMED":
        with pytest.raises(importer._RowProblem) as caught:
            importer._phone(typed)
        assert caught.value.reason == "PHONE_MALFORMED"
    else:
        assert importer._phone(typed) == expected


def test_phones_written_differently_are_one_phone(server: RunningServer, tmp_path: Path) -> None:
    path = tmp_path / "phones.csv"
    path.write_text(
        "手机,姓名\n"
        "+86 138 0000 0021,甲\n"
        "8613100000007,乙\n"
        "139-0000-0001,丙\n"
        "13800000021,丁\n"  # row 2's phone
        "+85213800000022,戊\n",
        encoding="utf-8",
    )
    with server.channel() as channel:
        client = Client(channel)
        client.apply(import_config())
        summary, _ = run_import(client, path)
        assert [(error.row_number, error.reason) for error in summary.errors] == [
            (5, "PHONE_DUPLICATE"),
            (6, "PHONE_MALFORMED"),
        ]
        assert summary.imported == 3
        assert [
            client.get(phone=phone).member.name for phone in ("13800000021", "13100000007")
        ] == [
            "甲",
            "乙",
        ]
        assert client.get(phone="+86 139 0000 0001").member.name == "丙"


# --- spreadsheet cells: numbers, dates -------------------------------------------------


def with_builtin_number_format(path: Path, format_code: str, builtin_id: int) -> None:
    """Rewrites an XLSX file so that the cells formatted with `format_code` use the
    built-in format `builtin_id` instead, with no code in the file: what Chinese Excel
    writes for its 2024年2月29日 date formats."""
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    styles = parts["xl/styles.xml"].decode("utf-8")
    escaped = format_code.replace('"', "&quot;")
    found = re.search(rf'<numFmt numFmtId="(\d+)" formatCode="{re.escape(escaped)}"\s*/>', styles)
    assert found is not None, styles
    styles = styles.replace(found.group(0), "").replace(
        f'numFmtId="{found.group(1)}"', f'numFmtId="{builtin_id}"'
    )
    parts["xl/styles.xml"] = styles.encode("utf-8")
    with zipfile.ZipFile(path, "w") as target:
        for name, data in parts.items():
            target.writestr(name, data)


def test_xlsx_numbers_and_dates_become_text_exactly(server: RunningServer, tmp_path: Path) -> None:
    chinese_date = 'yyyy"年"m"月"d"日"'
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["手机", "姓名", "生日", "attr:height", "attr:since", "attr:note"])
    rows = [
        (13800000001, "甲", datetime.date(1990, 5, 17), 0.00001, datetime.date(2024, 2, 29), 1e20),
        (13800000002, "乙", None, 40.0, datetime.datetime(2020, 1, 2), -0.0),
        (13800000003, "丙", 32_645, 175.5, 45_351, 2.5e-7),  # serials, in 年月日 format
    ]
    for row in rows:
        sheet.append(row)
    for cell in (sheet["C4"], sheet["E4"]):
        cell.number_format = chinese_date
    path = tmp_path / "cells.xlsx"
    workbook.save(path)
    with_builtin_number_format(path, chinese_date, 31)
    config = import_config()
    config.attributes.add(code="height", name="身高", type=config_pb2.NUMBER)
    config.attributes.add(code="since", name="入会", type=config_pb2.DATE)
    config.attributes.add(code="note", name="备注", type=config_pb2.TEXT)
    with server.channel() as channel:
        client = Client(channel)
        client.apply(config)
        summary, _ = run_import(client, path)
        assert (summary.imported, summary.errors) == (3, [])
        shown = [client.get(phone=f"1380000000{index}").member for index in (1, 2, 3)]
    assert [(m.birthday, dict(m.attributes)) for m in shown] == [
        (
            "1990-05-17",
            {"height": "0.00001", "since": "2024-02-29", "note": "100000000000000000000"},
        ),
        ("", {"height": "40", "since": "2020-01-02", "note": "0"}),
        ("1989-05-17", {"height": "175.5", "since": "2024-02-29", "note": "0.00000025"}),
    ]


# --- referrers (推荐人) -------------------------------------------------------------------


def test_a_referrer_column_names_members_by_phone(
    server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "CHUNK_ROWS", 2)  # so that referrers and rows part ways
    path = tmp_path / "referred.csv"
    path.write_text(
        "手机,姓名,推荐人\n"
        "13800000001,甲,\n"  # row 2
        "13800000002,乙,13800000001\n"  # referred by row 2
        "13800000003,丙,+86 138 0000 0005\n"  # referred by row 5, further down
        "13800000005,戊,13900000000\n"  # referred by a member already there
        "13800000006,己,13800000003\n"  # referred by row 4, which waits for row 5
        "13800000007,庚,13700000000\n"  # nobody has this phone
        "13800000008,辛,12345\n"  # not a phone
        "13800000009,壬,13800000010\n"  # 壬 and 癸 refer to each other
        "13800000010,癸,13800000009\n",
        encoding="utf-8",
    )
    parsed = importer._parse_file(str(path), "p")
    assert [(chunk.wave, chunk.row_numbers) for chunk in parsed.chunks] == [
        (0, [2, 5]), (1, [3, 4]), (0, [7]), (2, [6]),
    ]  # fmt: skip
    with server.channel() as channel:
        client = Client(channel)
        client.apply(import_config())
        old = client.register(EXISTING_PHONE, "老会员").member.member_id
        summary, _ = run_import(client, path)
        assert [(error.row_number, error.reason) for error in summary.errors] == [
            (7, "REFERRER_NOT_FOUND"),
            (8, "PHONE_MALFORMED"),
            (9, "REFERRAL_CHAIN_TOO_LONG"),
            (10, "REFERRAL_CHAIN_TOO_LONG"),
        ]
        assert summary.errors[1].message.startswith('referrer: phone "12345" is not')

        def referrer_of(phone: str) -> str:
            referrer_id = client.get(phone=phone).member.referrer_member_id
            return client.get(member_id=referrer_id).member.phone if referrer_id else ""

        assert {phone: referrer_of(phone) for phone in ("13800000001", "13800000002")} == {
            "13800000001": "",
            "13800000002": "13800000001",
        }
        assert referrer_of("13800000003") == "13800000005"
        assert referrer_of("13800000005") == EXISTING_PHONE
        assert referrer_of("13800000006") == "13800000003"
        assert client.get(phone=EXISTING_PHONE).member.member_id == old
        again, _ = run_import(client, path)
        assert (again.imported, again.already_imported) == (0, summary.imported)
        assert again.errors == summary.errors


# --- failed rows: fixed in the --errors file, imported again ------------------------------


def test_the_errors_file_is_a_file_to_fix_and_import(server: RunningServer, tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "members.xlsx")
    with server.channel() as channel:
        client = Client(channel)
        client.apply(import_config())
        client.register(EXISTING_PHONE, "老会员")
        _, errors_csv = run_import(client, path)
        # Fix two of the rows where they failed: the date of row 7, the name of row 8.
        fixed = errors_csv.replace("1990-02-30", "1990-02-28").replace(
            ",13800000008,,", ",13800000008,周八,"
        )
        errors_path = tmp_path / "failed.csv"
        errors_path.write_text(fixed, encoding="utf-8-sig")
        retried, errors_again = run_import(client, errors_path)
        assert (retried.rows, retried.imported, retried.already_imported) == (6, 2, 0)
        # Rows are numbered as the errors file has them now.
        assert [(error.row_number, error.reason) for error in retried.errors] == [
            (2, "PHONE_MALFORMED"),
            (3, "PHONE_TAKEN"),  # row 5 of the first file: row 2's phone, registered by now
            (4, "PHONE_TAKEN"),
            (7, "FIELD_UNKNOWN"),
        ]
        assert client.get(phone="13800000007").member.birthday == "1990-02-28"
        assert client.get(phone="13800000008").member.name == "周八"
        header = next(csv.reader(io.StringIO(errors_again)))
        assert header == ["error_row", "error_reason", "error_message", *HEADER]


class _Call:
    def __init__(self, replayed: bool) -> None:
        self.metadata = (("mms-replayed", "1"),) if replayed else ()

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata


class _Unavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE


class _Method:
    """ImportMembers of a stub that answers from `outcomes`, one per attempt."""

    def __init__(self, outcomes: list[object]) -> None:
        self.outcomes = outcomes

    def with_call(self, request: object, **_: object) -> tuple[object, _Call]:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, grpc.RpcError):
            raise outcome
        response = member_pb2.ImportMembersResponse(imported=1)
        response.results.add(index=0, member_id=1)
        return response, _Call(replayed=bool(outcome))


def test_a_replay_is_an_earlier_runs_only_when_this_run_sent_nothing_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importer, "RETRY_DELAY_S", 0)
    chunk = importer._Chunk(
        0, [2], member_pb2.ImportMembersRequest(request_id="p-0").SerializeToString()
    )

    class Stub:
        def __init__(self, outcomes: list[object]) -> None:
            self.ImportMembers = _Method(outcomes)

    def earlier_run(*outcomes: object) -> bool:
        return importer._send_chunk(Stub(list(outcomes)), chunk, (), 1.0).earlier_run

    assert earlier_run(True) is True  # replayed at once: an earlier run's answer
    assert earlier_run(False) is False
    # A first attempt that timed out may have landed: its replayed retry is this run's.
    assert earlier_run(_Unavailable(), True) is False
