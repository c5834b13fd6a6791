"""The independent auditor behind `mms db audit DIR`.

It checks every invariant of docs/STORAGE.md ("Invariants") on an LMDB environment
that no server holds open: a copy made by `mms db backup`, or a stopped server's data
folder. It never goes through the Rust core: it opens the environment with the Python
`lmdb` package, splits the keys by hand and decodes the records with the protobuf
classes, so a bug in the core cannot hide itself from the check.

Point it at a copy or a stopped server, never at a running server's folder: without
the lock file (lock=False) the writer cannot see this reader and may reuse the pages it
reads. Everything is read in one read transaction. Merchants are found by jumping from one key
prefix to the next, then audited one at a time, so memory grows with the largest
merchant: its ledger is streamed once, with sums kept per account and per member (and 8
bytes per entry for its request id), then every other database of the merchant is
streamed once and compared with them.

Problem numbers are the invariants of docs/STORAGE.md; 0 is for anything else the
layout says that is not so (a key or value that does not decode, a missing named
database, an account name or unit the account table does not know, an account of a
member that does not exist, an entry kind the auditor does not know).
"""

from __future__ import annotations

import bisect
import json
import os
import re
import sys
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import lmdb
from google.protobuf.message import DecodeError, Message

from engine.proto import config_pb2, member_pb2, records_pb2

DATABASE_NAMES = (
    "config",
    "members",
    "phones",
    "cards",
    "accounts",
    "ledger",
    "requests",
    "counters",
)
DATABASES_MAX = 16
SEPARATOR = b"\x00"
# Every key of merchant M (M 0x00 ...) sorts below M + NEXT_PREFIX_BYTE.
NEXT_PREFIX_BYTE = b"\x01"
U64_BYTES = 8
MERCHANT_ID = re.compile(rb"[a-z0-9_-]{1,32}")
COUNTER_MEMBER_ID = "member_id"
COUNTER_LEDGER_SEQ = "ledger_seq"

KEY_CHARS_MAX = 120
MERCHANT_CHARS_MAX = 40
QUOTE_CHARS_MAX = 64
MESSAGE_CHARS_MAX = 400
PATH_CHARS_MAX = 300
PROBLEMS_MAX = 10_000
PROBLEMS_PRINTED_MAX = 100
MERCHANTS_PRINTED_MAX = 100
HASH_MASK = (1 << 64) - 1

EXIT_CLEAN = 0
EXIT_PROBLEMS = 1
EXIT_UNREADABLE = 2

FEN = records_pb2.FEN
POINTS = records_pb2.POINTS
UNIT_NAMES = {FEN: "fen", POINTS: "points"}

INVARIANTS = {
    0: "layout as docs/STORAGE.md describes it",
    1: "ledger sequence runs 1..n, counter ledger_seq = n",
    2: "entries sum to zero per unit, no zero postings",
    3: "accounts equal their postings",
    4: "member balances never negative",
    5: "phone and card indexes",
    6: "member ids run 1..n, counter member_id = n",
    7: "cumulative recharge and spend",
    8: "request records point at their entry",
}

COUNT_NAMES = (
    "merchants",
    "configs",
    "members",
    "phones",
    "cards",
    "accounts",
    "ledger_entries",
    "postings",
    "requests",
)

MEMBER_ACCOUNT = re.compile(r"member/([1-9][0-9]{0,19})/(principal|bonus|points)")
STORE_ACCOUNT = re.compile(r"store/[A-Za-z0-9_-]{1,16}/(cash|bank_card|scan_pay|sales|discount)")
MERCHANT_ACCOUNT_UNITS = {
    "merchant/recharge_bonus": FEN,
    "merchant/points_redemption": FEN,
    "merchant/points_issued": POINTS,
}
MEMBER_ACCOUNT_UNITS = {"principal": FEN, "bonus": FEN, "points": POINTS}


class AuditError(Exception):
    """The environment cannot be opened or read (as opposed to a broken invariant)."""


@dataclass(frozen=True)
class Problem:
    invariant: int
    merchant: str
    key: str
    message: str


@dataclass
class MerchantTotals:
    """What a merchant owes its members, as recomputed from the ledger."""

    principal_fen: int = 0
    bonus_fen: int = 0
    points: int = 0
    members: int = 0
    ledger_entries: int = 0
    config_version: int = 0
    config_name: str = ""


@dataclass
class AuditReport:
    merchants: list[str]
    problems: list[Problem]
    counts: dict[str, int]
    totals: dict[str, MerchantTotals] = field(default_factory=dict)
    # Problems beyond PROBLEMS_MAX are counted here, not kept.
    problems_omitted: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems and not self.problems_omitted


def audit(path: str) -> AuditReport:
    """Audits the environment in folder `path`; AuditError if it cannot be read."""
    environment = _open_environment(path)
    try:
        with environment.begin(write=False, buffers=False) as transaction:
            sink = _ProblemSink()
            databases = _open_databases(environment, transaction, sink)
            return _Auditor(transaction, databases, sink).run()
    except lmdb.Error as error:
        raise AuditError(f"cannot read {_printable(path, PATH_CHARS_MAX)}: {error}") from error
    finally:
        environment.close()


def main_audit(path: str, as_json: bool) -> int:
    """`mms db audit`: prints the report. 0: clean, 1: problems, 2: unreadable."""
    try:
        report = audit(path)
    except AuditError as error:
        if as_json:
            print(
                json.dumps(
                    {
                        "path": _printable(path, PATH_CHARS_MAX),
                        "ok": False,
                        "error": str(error),
                    }
                )
            )
        else:
            print(f"mms db audit: {error}", file=sys.stderr)
        return EXIT_UNREADABLE
    print(report_json(path, report) if as_json else report_text(path, report))
    return EXIT_CLEAN if report.clean else EXIT_PROBLEMS


# --- opening --------------------------------------------------------------------------


def _open_environment(path: str) -> lmdb.Environment:
    shown = _printable(path, PATH_CHARS_MAX)
    if not os.path.isdir(path):
        raise AuditError(f"{shown} is not a directory")
    if not os.path.isfile(os.path.join(path, "data.mdb")):
        raise AuditError(f"{shown} holds no data.mdb: not an LMDB environment")
    try:
        # lock=False: the copy is not shared with a writer, and the lock file of the
        # core's LMDB (lock format v2) cannot be used by this LMDB 0.9 anyway.
        return lmdb.open(path, readonly=True, lock=False, max_dbs=DATABASES_MAX, subdir=True)
    except lmdb.Error as error:
        raise AuditError(f"cannot open the LMDB environment in {shown}: {error}") from error


def _open_databases(
    environment: lmdb.Environment, transaction: lmdb.Transaction, sink: _ProblemSink
) -> dict[str, Any]:
    """The named databases that exist; a missing one is reported and read as empty."""
    databases = {}
    for name in DATABASE_NAMES:
        try:
            databases[name] = environment.open_db(name.encode(), txn=transaction, create=False)
        except lmdb.NotFoundError:
            sink.add(0, "", name, f"named database {name} is missing")
    return databases


# --- the audit ------------------------------------------------------------------------


class _ProblemSink:
    """Keeps the first PROBLEMS_MAX problems and counts the rest."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.omitted = 0

    def add(self, invariant: int, merchant: str, key: str, message: str) -> None:
        if len(self.problems) >= PROBLEMS_MAX:
            self.omitted += 1
            return
        problem = Problem(invariant, merchant, key, _clip(message, MESSAGE_CHARS_MAX))
        self.problems.append(problem)


class _Auditor:
    def __init__(
        self,
        transaction: lmdb.Transaction,
        databases: dict[str, Any],
        sink: _ProblemSink,
    ) -> None:
        self.transaction = transaction
        self.databases = databases
        self.sink = sink
        self.counts: Counter[str] = Counter({name: 0 for name in COUNT_NAMES})

    def run(self) -> AuditReport:
        prefixes = sorted(self._merchant_prefixes())
        totals: dict[str, MerchantTotals] = {}
        for prefix in prefixes:
            merchant = _MerchantAudit(self.transaction, self.databases, self.sink, prefix)
            # Only ids that break the merchant id rule can print alike; keep both.
            if merchant.merchant in totals:
                merchant.merchant += f"#{len(totals)}"
            totals[merchant.merchant] = merchant.run(self.counts)
        self.counts["merchants"] = len(prefixes)
        return AuditReport(
            merchants=list(totals),
            problems=self.sink.problems,
            counts=dict(self.counts),
            totals=totals,
            problems_omitted=self.sink.omitted,
        )

    def _merchant_prefixes(self) -> set[bytes]:
        """Every merchant id that starts a key, one cursor jump per merchant."""
        prefixes: set[bytes] = set()
        for name, database in self.databases.items():
            cursor = self.transaction.cursor(database)
            positioned = cursor.first()
            while positioned:
                key = cursor.key()
                separator_index = key.find(SEPARATOR)
                if separator_index < 0:
                    self.sink.add(0, "", f"{name}:{_printable(key)}", "key has no 0x00")
                    positioned = cursor.set_range(key + SEPARATOR)
                    continue
                prefix = key[:separator_index]
                prefixes.add(prefix)
                positioned = cursor.set_range(prefix + NEXT_PREFIX_BYTE)
        return prefixes


@dataclass(slots=True)
class _AccountSum:
    """An account as its postings make it, built while the ledger streams by."""

    unit: int
    balance: int = 0
    posting_count: int = 0
    last_seq: int = 0
    mixed_units: bool = False


class _SeqIndex:
    """A 64-bit hash of each entry's request_id, 8 bytes per entry, found by seq.

    Seqs normally run 1..n, so values sit in one array; each gap starts a new run. A
    hash that matches is taken as a match (a false one has odds of 2^-64); a mismatch
    is checked again on the entry itself before it is reported.
    """

    def __init__(self) -> None:
        self.run_first_seqs: list[int] = []
        self.run_first_positions: list[int] = []
        self.values = array("Q")
        self.last_seq = -1

    def append(self, seq: int, value: int) -> None:
        if seq != self.last_seq + 1:
            self.run_first_seqs.append(seq)
            self.run_first_positions.append(len(self.values))
        self.values.append(value)
        self.last_seq = seq

    def get(self, seq: int) -> int | None:
        run_index = bisect.bisect_right(self.run_first_seqs, seq) - 1
        if run_index < 0:
            return None
        position = self.run_first_positions[run_index] + seq - self.run_first_seqs[run_index]
        run_end = (
            self.run_first_positions[run_index + 1]
            if run_index + 1 < len(self.run_first_positions)
            else len(self.values)
        )
        return self.values[position] if position < run_end else None


class _MerchantAudit:
    """All the checks of one merchant."""

    def __init__(
        self,
        transaction: lmdb.Transaction,
        databases: dict[str, Any],
        sink: _ProblemSink,
        prefix: bytes,
    ) -> None:
        self.transaction = transaction
        self.databases = databases
        self.sink = sink
        self.prefix = prefix + SEPARATOR
        self.merchant = _printable(prefix, MERCHANT_CHARS_MAX)
        self.counts: Counter[str] = Counter()
        self.totals = MerchantTotals()
        self.accounts: dict[str, _AccountSum] = {}
        # member id -> [recharged fen, spent fen] over the member's entries
        self.cumulative: dict[int, list[int]] = {}
        self.request_hashes = _SeqIndex()
        self.negative_reported: set[str] = set()
        self.member_ids: set[int] = set()

    def run(self, counts: Counter[str]) -> MerchantTotals:
        if not MERCHANT_ID.fullmatch(self.prefix[:-1]):
            self.report(0, "", "merchant id is not 1-32 of [a-z0-9_-]")
        self.audit_config()
        self.audit_ledger()
        self.add_member_totals()
        self.audit_members()
        self.audit_index("phones", "phone")
        self.audit_index("cards", "card_no")
        self.audit_accounts()
        self.audit_requests()
        counts.update(self.counts)
        self.totals.members = self.counts["members"]
        self.totals.ledger_entries = self.counts["ledger_entries"]
        return self.totals

    # --- helpers ---

    def report(self, invariant: int, key: str, message: str) -> None:
        self.sink.add(invariant, self.merchant, key, message)

    def segment(self, database: str) -> Iterator[tuple[bytes, bytes]]:
        """(key after `M 0x00`, value) of each record of this merchant, in key order."""
        if database not in self.databases:
            return
        cursor = self.transaction.cursor(self.databases[database])
        if not cursor.set_range(self.prefix):
            return
        for key, value in cursor.iternext():
            if not key.startswith(self.prefix):
                return
            yield key[len(self.prefix) :], value

    def get(self, database: str, rest: bytes) -> bytes | None:
        if database not in self.databases:
            return None
        return self.transaction.get(self.prefix + rest, db=self.databases[database])

    def decode(self, key: str, value: bytes, message_class: type[Message]) -> Any:
        try:
            return message_class.FromString(value)
        except DecodeError:
            name = message_class.DESCRIPTOR.full_name
            self.report(0, key, f"value does not decode as {name}")
            return None

    def u64_key(self, database: str, rest: bytes) -> int | None:
        if len(rest) != U64_BYTES:
            self.report(0, f"{database}:{_printable(rest)}", "key is not M + u64be")
            return None
        return int.from_bytes(rest, "big")

    def text_key(self, database: str, rest: bytes) -> str | None:
        try:
            return rest.decode("utf-8")
        except UnicodeDecodeError:
            self.report(0, f"{database}:{_printable(rest)}", "key is not UTF-8")
            return None

    def check_counter(self, name: str, last: int, invariant: int, what: str) -> None:
        raw = self.get("counters", name.encode())
        if raw is not None and len(raw) != U64_BYTES:
            self.report(0, f"counters:{name}", f"value is {len(raw)} bytes, not a u64be")
            return
        value = 0 if raw is None else int.from_bytes(raw, "big")
        if value != last:
            self.report(
                invariant,
                f"counters:{name}",
                f"counter is {value}, last {what} is {last}",
            )

    # --- config ---

    def audit_config(self) -> None:
        for rest, value in self.segment("config"):
            key = f"config:{_printable(rest)}"
            if rest:
                self.report(0, key, "config key has bytes after the merchant id")
                continue
            self.counts["configs"] += 1
            config = self.decode(key, value, config_pb2.MerchantConfig)
            if config is not None:
                self.totals.config_version = config.version
                self.totals.config_name = _printable(config.name, QUOTE_CHARS_MAX)

    # --- invariants 1, 2, and what 3, 4, 7 and 8 need from the ledger ---

    def audit_ledger(self) -> None:
        previous_seq = 0
        for rest, value in self.segment("ledger"):
            seq = self.u64_key("ledger", rest)
            if seq is None:
                continue
            key = f"ledger:{seq}"
            if seq != previous_seq + 1:
                self.report(1, key, _gap_message("seq", previous_seq, seq))
            previous_seq = seq
            self.counts["ledger_entries"] += 1
            entry = self.decode(key, value, records_pb2.LedgerEntry)
            if entry is None:
                self.request_hashes.append(seq, 0)
                continue
            self.request_hashes.append(seq, _text_hash(entry.request_id))
            self.apply_entry(key, seq, entry)
        self.check_counter(COUNTER_LEDGER_SEQ, previous_seq, 1, "ledger entry")

    def apply_entry(self, key: str, seq: int, entry: records_pb2.LedgerEntry) -> None:
        if entry.seq != seq:
            self.report(1, key, f"entry's seq field is {entry.seq}")
        # Plain tuples: each field read from a protobuf message builds a new object.
        postings = [(posting.account, posting.amount, posting.unit) for posting in entry.postings]
        for message in _posting_problems(postings):
            self.report(2, key, message)
        for name, amount, unit in postings:
            account = self.accounts.get(name)
            if account is None:
                account = self.accounts[name] = _AccountSum(unit)
            elif account.unit != unit:
                account.mixed_units = True
            account.balance += amount
            account.posting_count += 1
            account.last_seq = seq
        self.counts["postings"] += len(postings)
        # Checked after the whole entry: the order of postings inside one entry is no
        # moment in time, but the state after each entry is.
        for name, _, _ in postings:
            if name.startswith("member/") and name not in self.negative_reported:
                balance = self.accounts[name].balance
                if balance < 0:
                    self.negative_reported.add(name)
                    message = f"balance {balance} after ledger entry {seq}"
                    self.report(4, f"accounts:{_printable(name)}", message)
        self.add_cumulative(key, entry)

    def add_cumulative(self, key: str, entry: records_pb2.LedgerEntry) -> None:
        if entry.kind == records_pb2.RECHARGE:
            column = 0
        elif entry.kind == records_pb2.CHECKOUT:
            column = 1
        else:
            self.report(0, key, f"entry kind {entry.kind} is not RECHARGE or CHECKOUT")
            return
        if entry.member_id == 0:
            if entry.kind == records_pb2.RECHARGE:
                self.report(7, key, "RECHARGE entry names no member")
            return
        sums = self.cumulative.setdefault(entry.member_id, [0, 0])
        sums[column] += entry.amount_fen

    def add_member_totals(self) -> None:
        for name, account in self.accounts.items():
            match = MEMBER_ACCOUNT.fullmatch(name)
            if match is None:
                continue
            kind = match.group(2)
            if kind == "principal":
                self.totals.principal_fen += account.balance
            elif kind == "bonus":
                self.totals.bonus_fen += account.balance
            else:
                self.totals.points += account.balance

    # --- invariants 5 (from the member's side), 6 and 7 ---

    def audit_members(self) -> None:
        previous_id = 0
        for rest, value in self.segment("members"):
            member_id = self.u64_key("members", rest)
            if member_id is None:
                continue
            key = f"members:{member_id}"
            if member_id != previous_id + 1:
                self.report(6, key, _gap_message("member id", previous_id, member_id))
            previous_id = member_id
            self.counts["members"] += 1
            self.member_ids.add(member_id)
            recharged_fen, spent_fen = self.cumulative.pop(member_id, [0, 0])
            member = self.decode(key, value, member_pb2.Member)
            if member is None:
                continue
            if member.member_id != member_id:
                self.report(6, key, f"record's member_id is {member.member_id}")
            self.check_reachable(key, member_id, member)
            if member.cumulative_recharge_fen != recharged_fen:
                message = f"cumulative_recharge_fen {member.cumulative_recharge_fen}"
                self.report(7, key, f"{message}, RECHARGE entries sum to {recharged_fen}")
            if member.cumulative_spend_fen != spent_fen:
                message = f"cumulative_spend_fen {member.cumulative_spend_fen}"
                self.report(7, key, f"{message}, CHECKOUT entries sum to {spent_fen}")
        self.check_counter(COUNTER_MEMBER_ID, previous_id, 6, "member id")
        for member_id in sorted(self.cumulative):
            self.report(7, f"members:{member_id}", "ledger entries name this missing member")

    def check_reachable(self, key: str, member_id: int, member: member_pb2.Member) -> None:
        if not member.phone:
            self.report(5, key, "member has no phone")
        else:
            self.check_index_entry(key, "phones", member.phone, member_id)
        if member.card_no:
            self.check_index_entry(key, "cards", member.card_no, member_id)

    def check_index_entry(self, key: str, database: str, value: str, member_id: int) -> None:
        found = self.get(database, value.encode())
        shown = _printable(value, QUOTE_CHARS_MAX)
        if found is None:
            self.report(5, key, f"{shown} is missing from {database}")
        elif found != member_id.to_bytes(U64_BYTES, "big"):
            self.report(5, key, f"{database} maps {shown} to {_u64_text(found)}")

    # --- invariant 5, from the index's side ---

    def audit_index(self, database: str, field_name: str) -> None:
        for rest, value in self.segment(database):
            key = f"{database}:{_printable(rest)}"
            self.counts[database] += 1
            if len(value) != U64_BYTES:
                self.report(5, key, f"value is {len(value)} bytes, not a u64be member id")
                continue
            member_id = int.from_bytes(value, "big")
            raw = self.get("members", value)
            if raw is None:
                self.report(5, key, f"points at member {member_id}, which does not exist")
                continue
            try:
                member = member_pb2.Member.FromString(raw)
            except DecodeError:
                continue  # already reported when the members were read
            actual = getattr(member, field_name)
            if actual.encode() != rest:
                shown = _printable(actual, QUOTE_CHARS_MAX)
                self.report(
                    5,
                    key,
                    f"points at member {member_id}, whose {field_name} is {shown}",
                )

    # --- invariants 3 and 4, from the accounts' side ---

    def audit_accounts(self) -> None:
        for rest, value in self.segment("accounts"):
            key = f"accounts:{_printable(rest)}"
            self.counts["accounts"] += 1
            name = self.text_key("accounts", rest)
            record = self.decode(key, value, records_pb2.AccountRecord)
            if name is None or record is None:
                continue
            self.check_account_name(key, name, record)
            self.check_account_sums(key, record, self.accounts.pop(name, None))
            negative = record.balance < 0 and name.startswith("member/")
            if negative and name not in self.negative_reported:
                self.report(4, key, f"stored balance is {record.balance}")
        for name in sorted(self.accounts):
            message = "posted to by the ledger but missing from accounts"
            self.report(3, f"accounts:{_printable(name)}", message)

    def check_account_name(self, key: str, name: str, record: records_pb2.AccountRecord) -> None:
        if record.account != name:
            self.report(3, key, f"record's account field is {_printable(record.account)}")
        expected_unit = _expected_unit(name)
        if expected_unit is None:
            self.report(0, key, "account name is not one docs/STORAGE.md lists")
        elif record.unit != expected_unit:
            self.report(
                0,
                key,
                f"unit is {_unit_name(record.unit)}, the name says {_unit_name(expected_unit)}",
            )
        match = MEMBER_ACCOUNT.fullmatch(name)
        if match is not None and int(match.group(1)) not in self.member_ids:
            self.report(0, key, f"account of member {match.group(1)}, which does not exist")

    def check_account_sums(
        self, key: str, record: records_pb2.AccountRecord, sums: _AccountSum | None
    ) -> None:
        if sums is None:
            self.report(3, key, "account has no postings in the ledger")
            return
        if sums.mixed_units or sums.unit != record.unit:
            self.report(3, key, f"unit is {_unit_name(record.unit)}, its postings differ")
        if record.balance != sums.balance:
            message = f"balance {record.balance}, its postings sum to {sums.balance}"
            self.report(3, key, message)
        if record.posting_count != sums.posting_count:
            message = f"posting_count {record.posting_count}, it has {sums.posting_count}"
            self.report(3, key, message)
        if record.last_seq != sums.last_seq:
            message = f"last_seq {record.last_seq}, its latest posting is in {sums.last_seq}"
            self.report(3, key, message)

    # --- invariant 8 ---

    def audit_requests(self) -> None:
        for rest, value in self.segment("requests"):
            key = f"requests:{_printable(rest)}"
            self.counts["requests"] += 1
            record = self.decode(key, value, records_pb2.RequestRecord)
            if record is None or record.ledger_seq == 0:
                continue
            request_id = self.text_key("requests", rest)
            if request_id is None:
                continue
            if self.request_hashes.get(record.ledger_seq) == _text_hash(request_id):
                continue
            message = self.request_mismatch(record.ledger_seq, request_id)
            if message is not None:
                self.report(8, key, message)

    def request_mismatch(self, seq: int, request_id: str) -> str | None:
        """Reads the entry itself, so that only a real mismatch is reported."""
        raw = self.get("ledger", seq.to_bytes(U64_BYTES, "big"))
        if raw is None:
            return f"ledger_seq {seq}, and there is no such entry"
        try:
            entry = records_pb2.LedgerEntry.FromString(raw)
        except DecodeError:
            return f"ledger_seq {seq}, and that entry does not decode"
        if entry.request_id == request_id:
            return None
        shown = _printable(entry.request_id, QUOTE_CHARS_MAX)
        return f"ledger_seq {seq}, whose entry has request_id {shown}"


# --- pure helpers ---------------------------------------------------------------------


def _posting_problems(postings: list[tuple[str, int, int]]) -> list[str]:
    """What breaks invariant 2 in one entry, given its (account, amount, unit)s."""
    problems = []
    sums: dict[int, int] = {}
    for index, (account, amount, unit) in enumerate(postings):
        if amount == 0:
            shown = _printable(account, QUOTE_CHARS_MAX)
            problems.append(f"posting {index} to {shown} has amount 0")
        if unit not in UNIT_NAMES:
            shown = _printable(account, QUOTE_CHARS_MAX)
            problems.append(f"posting {index} to {shown} has unit {unit}")
        sums[unit] = sums.get(unit, 0) + amount
    for unit, total in sorted(sums.items()):
        if total != 0:
            problems.append(f"postings in {_unit_name(unit)} sum to {total}, not 0")
    return problems


def _expected_unit(account: str) -> int | None:
    """The unit docs/STORAGE.md gives the account name; None if the table lacks it."""
    match = MEMBER_ACCOUNT.fullmatch(account)
    if match is not None:
        return MEMBER_ACCOUNT_UNITS[match.group(2)]
    if STORE_ACCOUNT.fullmatch(account):
        return FEN
    return MERCHANT_ACCOUNT_UNITS.get(account)


def _gap_message(what: str, previous: int, current: int) -> str:
    if current <= previous:
        return f"{what} {current} follows {previous}"
    return f"{what} {current} follows {previous}: {previous + 1}..{current - 1} missing"


def _text_hash(text: str) -> int:
    # Python's string hash is salted per process, which is fine: both sides of every
    # comparison are hashed in this process.
    return hash(text) & HASH_MASK


def _unit_name(unit: int) -> str:
    return UNIT_NAMES.get(unit, f"unit {unit}")


def _u64_text(value: bytes) -> str:
    if len(value) != U64_BYTES:
        return f"a {len(value)}-byte value"
    return f"member {int.from_bytes(value, 'big')}"


def _printable(data: bytes | str, limit: int = KEY_CHARS_MAX) -> str:
    """Data from the file as safe text: invalid UTF-8 and control characters escaped."""
    if isinstance(data, bytes):
        # 4 bytes per character at most: decoding more than that would be wasted.
        text = data[: 4 * limit + 4].decode("utf-8", "backslashreplace")
    else:
        text = data[: limit + 1]
    if text.isprintable():
        return _clip(text, limit)  # the common case, without a loop in Python
    escaped = "".join(
        character if character.isprintable() else character.encode("unicode_escape").decode()
        for character in text[: limit + 1]
    )
    return _clip(escaped, limit)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def yuan(fen: int) -> str:
    """¥1,234.05 for 123405 fen, by integer arithmetic."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}¥{whole:,}.{cents:02d}"


# --- output ---------------------------------------------------------------------------


def report_text(path: str, report: AuditReport) -> str:
    lines = [f"mms db audit {_printable(path, PATH_CHARS_MAX)}"]
    for merchant in report.merchants[:MERCHANTS_PRINTED_MAX]:
        lines.append(_merchant_line(merchant, report.totals[merchant]))
    if len(report.merchants) > MERCHANTS_PRINTED_MAX:
        lines.append(f"  ... and {len(report.merchants) - MERCHANTS_PRINTED_MAX} more merchants")
    lines.append("counts: " + ", ".join(f"{name} {report.counts[name]}" for name in COUNT_NAMES))
    totals = report.totals.values()
    principal_fen = sum(total.principal_fen for total in totals)
    bonus_fen = sum(total.bonus_fen for total in totals)
    points = sum(total.points for total in totals)
    lines.append(
        f"owed to members: principal {yuan(principal_fen)}, bonus {yuan(bonus_fen)}, "
        f"points {points:,}"
    )
    lines.extend(_problem_lines(report))
    return "\n".join(lines)


def _merchant_line(merchant: str, totals: MerchantTotals) -> str:
    config = f"config v{totals.config_version} {totals.config_name!r}"
    if totals.config_version == 0:
        config = "no config"
    return (
        f"  {merchant} ({config}): {totals.members:,} members, "
        f"{totals.ledger_entries:,} ledger entries; "
        f"principal {yuan(totals.principal_fen)}, "
        f"bonus {yuan(totals.bonus_fen)}, points {totals.points:,}"
    )


def _problem_lines(report: AuditReport) -> list[str]:
    if report.clean:
        return ["OK: every invariant of docs/STORAGE.md holds"]
    total = len(report.problems) + report.problems_omitted
    lines = [f"FAILED: {total} problem{'' if total == 1 else 's'}"]
    for problem in report.problems[:PROBLEMS_PRINTED_MAX]:
        lines.append(
            f"  [{problem.invariant}] {problem.merchant or '-'} {problem.key}: {problem.message}"
        )
    if total > PROBLEMS_PRINTED_MAX:
        lines.append(f"  ... and {total - PROBLEMS_PRINTED_MAX} more (--json lists more)")
    by_invariant = Counter(problem.invariant for problem in report.problems)
    for invariant, count in sorted(by_invariant.items()):
        lines.append(f"  invariant {invariant} ({INVARIANTS[invariant]}): {count}")
    return lines


def report_json(path: str, report: AuditReport) -> str:
    document = {
        "path": _printable(path, PATH_CHARS_MAX),
        "ok": report.clean,
        "merchants": report.merchants,
        "counts": report.counts,
        "totals": {merchant: asdict(totals) for merchant, totals in report.totals.items()},
        "problems": [asdict(problem) for problem in report.problems],
        "problems_omitted": report.problems_omitted,
    }
    return json.dumps(document, ensure_ascii=False, indent=2)
