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
merchant. Its ledger is streamed once, with sums kept per account and per member, and
17 bytes per entry (a hash of its request id, its member id, a seen flag). Then every
other database of the merchant is streamed once, in an order that lets each one be
compared with what the earlier ones left behind: cards before members (a member's
default card), both before the indexes that point at them, lots before the accounts
(their uses and value). Per member and per card a few 8-byte words are kept (hashes of
phone, name and card number, the card's member and status), in arrays indexed by id;
per lot, card event, member change and follow-up one byte, to see their ids run 1..n.
Checks from the side of a record (a member's phone) are point lookups; checks from the
side of an index (a phone's member) compare hashes and read the record only when they
differ, so only a real mismatch is reported.

From format 3 on (the merchant's `format` counter), a member's record, the accounts of
the member and of its cards, its cards' buckets, its points batches and its history sit
together in `member_state`. The checks still read `members`, `accounts`, `card_origins`,
`points_batches` and `member_ledger` by those names and keys: for such a merchant they are
views of member_state (one pass per kind, jumping from member to member), so a check
written once serves both layouts. A merchant below format 3 (a copy of older data) is
read in the older layout.

Problem numbers are the invariants of docs/STORAGE.md; 0 is for anything else the
layout says that is not so (a key or value that does not decode, a missing named
database, an account name or unit the account table does not know, an account of a
member or card that does not exist, an entry kind the auditor does not know, a counter
beyond what the auditor can hold).
"""

from __future__ import annotations

import bisect
import calendar
import datetime
import fcntl
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

from engine.proto import (
    card_pb2,
    catalog_pb2,
    chain_pb2,
    config_pb2,
    coupon_pb2,
    member_pb2,
    records_pb2,
)

DATABASE_NAMES = (
    "config",
    "members",
    "phones",
    "card_numbers",
    "cards",
    "member_cards",
    "card_events",
    "lots",
    "accounts",
    "ledger",
    "member_ledger",
    "names",
    "member_changes",
    "follow_ups",
    "subsidiaries",
    "requests",
    "counters",
    "merchant_keys",
    "catalog",
    "barcodes",
    "stock",
    "settlements",
    "suspended_bills",
    "staff",
    "card_origins",
    "clearing_days",
    "points_batches",
    "coupons",
    "coupon_codes",
    "member_coupons",
    "tokens",
    "staff_tokens",
    "audit_log",
    "audit_staff",
    "member_state",
)
# The core opens up to 64 named databases (rust_core/src/store.rs, DATABASES_MAX).
DATABASES_MAX = 64
SEPARATOR = b"\x00"
# Every key of merchant M (M 0x00 ...) sorts below M + NEXT_PREFIX_BYTE.
NEXT_PREFIX_BYTE = b"\x01"
U64_BYTES = 8
U64_PAIR_BYTES = 2 * U64_BYTES
MERCHANT_ID = re.compile(rb"[a-z0-9_-]{1,32}")
MEMBER_CODE_KEY_BYTES = 32  # rust_core/src/member_code.rs, KEY_BYTES
COUNTER_MEMBER_ID = "member_id"
COUNTER_LEDGER_SEQ = "ledger_seq"
COUNTER_CARD_ID = "card_id"
COUNTER_LOT_ID = "lot_id"
COUNTER_CARD_EVENT_SEQ = "card_event_seq"
COUNTER_MEMBER_CHANGE_SEQ = "member_change_seq"
COUNTER_FOLLOW_UP_SEQ = "follow_up_seq"
COUNTER_POINTS_BATCH_ID = "points_batch_id"
COUNTER_COUPON_ID = "coupon_id"
COUNTER_FORMAT = "format"
# rust_core/src/coupons.rs: CODE_CHARS characters of CODE_ALPHABET.
COUPON_CODE = re.compile(r"[23456789ABCDEFGHJKLMNPQRSTUVWXYZ]{12}")
COUPON_STATES_KEPT = frozenset(
    {coupon_pb2.COUPON_STATE_ISSUED, coupon_pb2.COUPON_STATE_REDEEMED, coupon_pb2.COUPON_STATE_VOID}
)

KEY_CHARS_MAX = 120
MERCHANT_CHARS_MAX = 40
QUOTE_CHARS_MAX = 64
MESSAGE_CHARS_MAX = 400
PATH_CHARS_MAX = 300
PROBLEMS_MAX = 10_000
PROBLEMS_PRINTED_MAX = 100
MERCHANTS_PRINTED_MAX = 100
# Missing id ranges reported per counter; the rest are summed up in one count.
MISSING_RANGES_REPORTED_MAX = 10
HASH_MASK = (1 << 64) - 1
# Ids are kept in arrays indexed by id. An id further than this past the largest one
# so far (a corrupt key) goes to a dict, so that it cannot make the arrays huge.
ID_GROWTH_MAX = 1 << 20
# Ids keyed under their parent (lots, card events, ...) are checked against a byte per
# id up to their counter; a counter above this is reported, not allocated.
SEQ_SET_COUNTER_MAX = 1 << 30
# Stands for "present, but its record does not decode" among the u64s kept per id.
UNKNOWN = (1 << 64) - 1

EXIT_CLEAN = 0
EXIT_PROBLEMS = 1
EXIT_UNREADABLE = 2

FEN = records_pb2.FEN
POINTS = records_pb2.POINTS
USES = records_pb2.USES
UNIT_NAMES = {FEN: "fen", POINTS: "points", USES: "uses"}
# A member's default card may be 0 only when every card of theirs is gone for good; an
# attached card in one of these states is no longer listed under its primary.
CARD_STATUSES_GONE = frozenset({card_pb2.CLOSED, card_pb2.REPLACED})
LINK_KINDS = frozenset(card_pb2.LinkKind.values())

INVARIANTS = {
    0: "layout as docs/STORAGE.md describes it",
    1: "ledger sequence runs 1..n, counter ledger_seq = n",
    2: "entries sum to zero per unit, no zero postings",
    3: "accounts equal their postings",
    4: "card, points and lot balances never negative (points: but for a debt)",
    5: "phone, card number and member card indexes, default cards",
    6: "member and card ids run 1..n, counters = n",
    7: "cumulative recharge and spend",
    8: "request records point at their entry",
    9: "member_ledger lists exactly each member's entries",
    10: "names point at members of that name (folded for search)",
    11: "lots under their card, lot accounts as the lot says",
    12: "card events, member changes and follow-ups under their owner, seqs run 1..n",
    13: "attached cards: their primary, who holds them, their limits",
    14: "a timed card's periods end on its expires_on; card dates are dates",
    15: "a configured merchant has one member-code key of 32 bytes",
    16: "settlements add up, name their checkout and refunds, never refund more than paid",
    17: "catalog items under their SKU, barcodes index exactly the items' barcodes",
    18: "a card's per-store buckets add up to its principal and bonus",
    19: "the clearing days of a store pair add up to its clearing accounts",
    20: "coupons: ids, code and member indexes, templates, redemptions match their settlement",
    21: "points batches hold each member's positive points balance",
    22: "tokens: hashed keys, each staff member's index and token agree",
    23: "the audit log runs 1..audit_seq, each entry names a change that was made",
    24: "member_state keys parse, each record under its member, none left in the old layout",
}
# Format 3 (docs/STORAGE.md): what a member's checkout touches is kept together in
# `member_state`, keyed M + u64be(member_id) + kind + rest, so one settle dirties one
# B-tree leaf. Each kind stands for the database the older formats kept it in.
FORMAT_MEMBER_STATE = 3
KIND_MEMBER = 1
KIND_ACCOUNT = 2
KIND_CARD_ORIGINS = 3
KIND_POINTS_BATCH = 4
KIND_HISTORY = 5
MEMBER_STATE_KINDS = {
    "members": KIND_MEMBER,
    "accounts": KIND_ACCOUNT,
    "card_origins": KIND_CARD_ORIGINS,
    "points_batches": KIND_POINTS_BATCH,
    "member_ledger": KIND_HISTORY,
}
KIND_NAMES = {
    KIND_MEMBER: "member",
    KIND_ACCOUNT: "account",
    KIND_CARD_ORIGINS: "card_origins",
    KIND_POINTS_BATCH: "points_batch",
    KIND_HISTORY: "history",
}
# What precedes the kind's own part of a member_state key: u64be(member_id) + kind.
MEMBER_STATE_HEAD_BYTES = U64_BYTES + 1
HISTORY_KEY_BYTES = MEMBER_STATE_HEAD_BYTES + U64_BYTES
# The databases format 3 empties for a merchant (its accounts keep what no member owns).
OLD_LAYOUT_DATABASES = ("members", "member_ledger", "points_batches", "card_origins")
# A copy made before a database existed lacks it: reported missing only for a merchant at
# the format that uses it.
DATABASES_SINCE_FORMAT = {"member_state": FORMAT_MEMBER_STATE}
# The accounts a member owns, kept with the member at format 3: member/{id}/... and
# card/{card_id}/... (under the card's member).
OWNED_ACCOUNT = re.compile(rb"(member|card)/([1-9][0-9]{0,19})/")
OWNED_PREFIXES = (b"member/", b"card/")
# The one database whose keys do not start with a merchant (the SHA-256 of a token).
UNPREFIXED_DATABASES = ("tokens",)
TOKEN_HASH_BYTES = 32

# What the report counts: records of the first databases by kind (ledger entries and
# their postings apart), those of the databases added since by their database's name.
COUNT_NAMES = (
    "merchants",
    "configs",
    "members",
    "phones",
    "cards",
    "card_numbers",
    "member_cards",
    "lots",
    "card_events",
    "accounts",
    "ledger_entries",
    "postings",
    "member_ledger",
    "names",
    "member_changes",
    "follow_ups",
    "requests",
    "merchant_keys",
) + DATABASE_NAMES[DATABASE_NAMES.index("catalog") :]

ID_PATTERN = r"([1-9][0-9]{0,19})"
CODE_PATTERN = r"[A-Za-z0-9_-]{1,16}"
CARD_ACCOUNT = re.compile(rf"card/{ID_PATTERN}/(principal|bonus)")
MEMBER_ACCOUNT = re.compile(rf"member/{ID_PATTERN}/points")
LOT_ACCOUNT = re.compile(rf"lot/{ID_PATTERN}/(?:(value)|uses/({CODE_PATTERN}))")
DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
STORE_ACCOUNT = re.compile(
    rf"store/{CODE_PATTERN}/"
    r"(cash|bank_card|scan_pay|sales|discount|card_fees|package_revenue|rounding|coupon_discount"
    r"|commission_expense)"
)
# Inter-store clearing (rust_core/src/chain/clearing.rs): what A owes B, and B's claim.
CLEARING_ACCOUNT = re.compile(rf"store/({CODE_PATTERN})/(owes|owed_by)/({CODE_PATTERN})")
STAFF_ACCOUNT = re.compile(rf"staff/{CODE_PATTERN}/commission")
# Day numbers in clearing_days keys: local days since 1970-01-01 plus this bias, u32be.
CLEARING_DAY_KEY_BIAS = 1_000_000
CLEARING_DAY_BYTES = 4
MERCHANT_ACCOUNT_UNITS = {
    "merchant/recharge_bonus": FEN,
    "merchant/points_redemption": FEN,
    "merchant/points_issued": POINTS,
    "merchant/points_adjusted": POINTS,
    "merchant/points_expired": POINTS,
    "merchant/uses_issued": USES,
    "merchant/forfeited_bonus": FEN,
    "merchant/referral_rebate": FEN,
}
# Accounts held for someone (a card holder, a member, a lot): never below zero.
HELD_PREFIXES = ("card/", "member/", "lot/")
POINTS_SOURCES = frozenset(
    value
    for value in records_pb2.PointsSource.values()
    if value != records_pb2.POINTS_SOURCE_UNSPECIFIED
)
KNOWN_ENTRY_KINDS = frozenset(
    value for value in records_pb2.EntryKind.values() if value != records_pb2.ENTRY_KIND_UNSPECIFIED
)


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
    cards: int = 0
    # Unused value of count-package lots (deferred revenue) and the uses left on them.
    package_value_fen: int = 0
    uses: int = 0


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
    """Audits the environment in folder `path` (a backup, or a stopped server's data);
    AuditError if it cannot be read or a server has it open."""
    shown = _printable(path, PATH_CHARS_MAX)
    lock = _refuse_a_live_environment(path, shown) if os.path.isdir(path) else None
    try:
        environment = _open_environment(path)
        try:
            with environment.begin(write=False, buffers=False) as transaction:
                sink = _ProblemSink()
                databases = _open_databases(environment, transaction, sink)
                return _Auditor(transaction, databases, sink).run()
        except lmdb.Error as error:
            raise AuditError(f"cannot read {shown}: {error}") from error
        finally:
            environment.close()
    finally:
        if lock is not None:
            os.close(lock)  # closing the descriptor releases the lock


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


def _refuse_a_live_environment(path: str, shown: str) -> int | None:
    """Takes the lock every LMDB process holds on byte 0 of lock.mdb (an fcntl record
    lock, shared by each process that has the environment open). Taking it alone fails
    while a server has the environment open: reading under a live writer without the
    reader table (lock=False) would read pages being reused. Returns the lock file's
    descriptor, kept open for the audit so no server opens the folder meanwhile; None
    for a folder without lock.mdb (a backup copy)."""
    lock_path = os.path.join(path, "lock.mdb")
    if not os.path.isfile(lock_path):
        return None
    descriptor = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except OSError as error:
        os.close(descriptor)
        raise AuditError(
            f"{shown} is open in a running server: audit a backup instead "
            "(mms db backup DEST, then mms db audit DEST)"
        ) from error
    return descriptor


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
    """The named databases that exist; a missing one is reported and read as empty (one
    added by a later format only for a merchant at that format: an older copy lacks it)."""
    databases = {}
    for name in DATABASE_NAMES:
        try:
            databases[name] = environment.open_db(name.encode(), txn=transaction, create=False)
        except lmdb.NotFoundError:
            if name not in DATABASES_SINCE_FORMAT:
                sink.add(0, "", name, f"named database {name} is missing")
    return databases


# --- bookkeeping ----------------------------------------------------------------------


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
        self.audit_tokens()
        return AuditReport(
            merchants=list(totals),
            problems=self.sink.problems,
            counts=dict(self.counts),
            totals=totals,
            problems_omitted=self.sink.omitted,
        )

    def audit_tokens(self) -> None:
        """Invariant 22, server-wide: each token is stored under the 32-byte hash of its
        text, decodes, and a staff member's token is in their merchant's index."""
        tokens, index = self.databases.get("tokens"), self.databases.get("staff_tokens")
        if tokens is None:
            return
        for key, value in self.transaction.cursor(tokens).iternext():
            self.counts["tokens"] += 1
            shown = f"tokens:{key.hex()[:16]}"
            try:
                record = records_pb2.TokenRecord.FromString(value)
            except DecodeError:
                self.sink.add(0, "", shown, "value does not decode as mms.v1.TokenRecord")
                continue
            if len(key) != TOKEN_HASH_BYTES:
                self.sink.add(22, record.merchant, shown, f"key is {len(key)} bytes, not 32")
            elif record.merchant:
                index_key = b"\x00".join(
                    (record.merchant.encode(), record.staff_code.encode(), key)
                )
                if index is None or self.transaction.get(index_key, db=index) is None:
                    self.sink.add(22, record.merchant, shown, "missing from staff_tokens")

    def _merchant_prefixes(self) -> set[bytes]:
        """Every merchant id that starts a key, one cursor jump per merchant."""
        prefixes: set[bytes] = set()
        for name, database in self.databases.items():
            if name in UNPREFIXED_DATABASES:
                continue
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
    """A u64 per ledger entry (a hash of its request_id, its member id), found by seq.

    Seqs normally run 1..n, so values sit in one array; each gap starts a new run. For
    request ids, a hash that matches is taken as a match (a false one has odds of
    2^-64); a mismatch is checked again on the entry itself before it is reported.
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

    def position(self, seq: int) -> int | None:
        """Where the value of `seq` sits in `values`, None if no entry has that seq."""
        run_index = bisect.bisect_right(self.run_first_seqs, seq) - 1
        if run_index < 0:
            return None
        position = self.run_first_positions[run_index] + seq - self.run_first_seqs[run_index]
        run_end = (
            self.run_first_positions[run_index + 1]
            if run_index + 1 < len(self.run_first_positions)
            else len(self.values)
        )
        return position if position < run_end else None

    def get(self, seq: int) -> int | None:
        position = self.position(seq)
        return None if position is None else self.values[position]

    def seq_at(self, position: int) -> int:
        run_index = bisect.bisect_right(self.run_first_positions, position) - 1
        return self.run_first_seqs[run_index] + position - self.run_first_positions[run_index]


class _IdTable:
    """A number per id, for ids that mostly arrive as 1, 2, 3 ...: one array indexed by
    id, plus a dict for the odd id far past the others, so that one corrupt key cannot
    make the array huge. `typecode` is the array's ("Q": u64, "B": a byte)."""

    def __init__(self, typecode: str = "Q") -> None:
        self.present = bytearray(1)  # id 0 is never assigned
        self.values = array(typecode, [0])
        self.far: dict[int, int] = {}

    def put(self, id_: int, value: int) -> None:
        size = len(self.present)
        if id_ < size:
            self.present[id_] = 1
            self.values[id_] = value
        elif id_ - size <= ID_GROWTH_MAX:
            gap = id_ - size
            if gap:
                self.present.extend(bytes(gap))
                self.values.frombytes(bytes(gap * self.values.itemsize))
            self.present.append(1)
            self.values.append(value)
        else:
            self.far[id_] = value

    def get(self, id_: int) -> int | None:
        if id_ < len(self.present):
            return self.values[id_] if self.present[id_] else None
        return self.far.get(id_)

    def __contains__(self, id_: int) -> bool:
        if id_ < len(self.present):
            return bool(self.present[id_])
        return id_ in self.far

    def items(self) -> Iterator[tuple[int, int]]:
        values = self.values
        position = self.present.find(1)
        while position >= 0:
            yield position, values[position]
            position = self.present.find(1, position + 1)
        yield from sorted(self.far.items())


class _SeqSet:
    """Which of the ids 1..n a counter has assigned were found: one byte per id.

    For records keyed under their parent (a lot under its card), whose ids do not come
    in order: every id must be found exactly once, and none above the counter.
    """

    def __init__(self, counter: int) -> None:
        self.counter = counter
        self.seen = bytearray(counter + 1)

    def mark(self, seq: int) -> str | None:
        """Why `seq` is wrong, or None."""
        if seq == 0 or seq > self.counter:
            return f"is above the counter ({self.counter})" if seq else "is 0"
        if self.seen[seq]:
            return "appears twice"
        self.seen[seq] = 1
        return None

    def missing(self) -> tuple[list[tuple[int, int]], int]:
        """The first missing ranges (first, last) and how many ids are missing in all."""
        missing_count = self.counter - self.seen.count(1)
        ranges: list[tuple[int, int]] = []
        first = self.seen.find(0, 1)
        while first >= 0 and len(ranges) < MISSING_RANGES_REPORTED_MAX:
            after = self.seen.find(1, first)
            last = self.counter if after < 0 else after - 1
            ranges.append((first, last))
            first = -1 if after < 0 else self.seen.find(0, after)
        return ranges, missing_count


@dataclass(slots=True)
class _LotSums:
    """The ledger's balances of one lot's accounts: its value and uses per item."""

    value_fen: int = 0
    uses: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _ChildKind:
    """Records kept under their owner (a card or a member), numbered by a counter."""

    database: str
    counter: str
    message_class: type[Message]
    owner: str  # "card" or "member"
    owner_field: str
    seq_field: str  # the record's copy of the seq in its key


CHILD_KINDS = (
    _ChildKind("card_events", COUNTER_CARD_EVENT_SEQ, card_pb2.CardEvent, "card", "card_id", "seq"),
    _ChildKind(
        "member_changes",
        COUNTER_MEMBER_CHANGE_SEQ,
        member_pb2.MemberChange,
        "member",
        "member_id",
        "seq",
    ),
    _ChildKind(
        "follow_ups", COUNTER_FOLLOW_UP_SEQ, member_pb2.FollowUp, "member", "member_id", "seq"
    ),
)


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
        # member id -> [recharged fen, spent fen] over the entries that name the member
        self.cumulative: dict[int, list[int]] = {}
        self.request_hashes = _SeqIndex()
        self.entry_members = _SeqIndex()
        # The kind of each entry, at the position request_hashes gives its seq.
        self.entry_kinds = array("B")
        self.refund_seqs: set[int] = set()
        self.entries_with_member = 0
        # seq -> the member whose card paid, for the few entries another member's card paid
        # (linked and group cards): they are listed under that member too.
        self.entry_payers: dict[int, int] = {}
        self.negative_reported: set[str] = set()
        # By member id: hashes of phone and name (UNKNOWN: the record does not decode).
        self.member_phone_hashes = _IdTable()
        self.member_name_hashes = _IdTable()
        # By card id: its member (UNKNOWN: the record does not decode), number hash, status.
        self.card_members = _IdTable()
        self.card_number_hashes = _IdTable()
        self.card_statuses = _IdTable("B")
        # Attached card id -> its primary, for live attached cards only (they are few).
        self.live_subsidiaries: dict[int, int] = {}
        # Attached card id -> (primary id, link kind, member id, live), for every card
        # that names a primary or a link kind (they are few).
        self.attached: dict[int, tuple[int, int, int, bool]] = {}
        # Ledger seq -> coupon discount it posts (store/S/coupon_discount, as a positive
        # amount), for the entries that post one.
        self.coupon_discounts: dict[int, int] = {}
        # The layout the merchant's records are in (counter `format`), read after the config.
        self.format = 0
        # Format 3: card id -> the member whose records hold its accounts or buckets, for
        # the cards that do not exist or do not decode (no Card.member_id to look them up by).
        self.stray_card_members: dict[int, int] = {}
        # Format 3: the member_state keys (after `M 0x00`) that do not parse or are not
        # under their owner, found by audit_member_state_keys: the views leave them out.
        self.member_state_rejected: set[bytes] = set()

    def run(self, counts: Counter[str]) -> MerchantTotals:
        if not MERCHANT_ID.fullmatch(self.prefix[:-1]):
            self.report(0, "", "merchant id is not 1-32 of [a-z0-9_-]")
        self.audit_config()
        self.format = self.read_format()
        self.audit_ledger()
        self.add_totals()
        self.audit_cards()
        # After the cards: a card's accounts and buckets belong under the card's member.
        self.audit_member_state()
        self.audit_members()
        self.audit_card_owners()
        self.audit_member_cards()
        self.audit_subsidiaries()
        self.audit_attached()
        self.audit_index(
            "card_numbers", "card", "card_no", self.card_number_hashes, self.card_number_of
        )
        self.audit_index("phones", "member", "phone", self.member_phone_hashes, self.phone_of)
        self.audit_names()
        self.audit_lots()
        for kind in CHILD_KINDS:
            self.audit_children(kind)
        self.audit_member_ledger()
        self.audit_points_batches()
        self.audit_accounts()
        self.audit_requests()
        self.audit_merchant_keys()
        self.audit_settlements()
        self.audit_catalog()
        self.audit_staff()
        self.audit_card_origins()
        self.audit_clearing_days()
        self.audit_coupons()
        self.audit_staff_tokens()
        self.audit_audit_log()
        counts.update(self.counts)
        self.totals.members = self.counts["members"]
        self.totals.cards = self.counts["cards"]
        self.totals.ledger_entries = self.counts["ledger_entries"]
        return self.totals

    # --- helpers ---

    def report(self, invariant: int, key: str, message: str) -> None:
        self.sink.add(invariant, self.merchant, key, message)

    def segment(self, database: str, under: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """(key after `M 0x00`, value) of each record of this merchant whose key goes on
        with `under`. At format 3 the databases member_state replaced are read from it,
        keyed as they were (so every check stays as it was written), in member order."""
        if self.member_state_layout and database in MEMBER_STATE_KINDS:
            return self.member_state_view(database, under)
        return self.records(database, under)

    def records(self, database: str, under: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """The records of the database itself, whatever the format, in key order."""
        if database not in self.databases:
            return
        prefix = self.prefix + under
        cursor = self.transaction.cursor(self.databases[database])
        if not cursor.set_range(prefix):
            return
        for key, value in cursor.iternext():
            if not key.startswith(prefix):
                return
            yield key[len(self.prefix) :], value

    def get(self, database: str, rest: bytes) -> bytes | None:
        """The record under `M 0x00 rest` as the old layout keyed it, wherever the
        merchant's format keeps it."""
        if self.member_state_layout and database in MEMBER_STATE_KINDS:
            place = self.member_state_place(database, rest)
            if place is None:
                return None
            database, rest = place
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

    def read(self, database: str, id_: int, message_class: type[Message]) -> Any:
        """The record under `M + u64be(id_)`, None if absent or undecodable (reported
        when its database was streamed)."""
        raw = self.get(database, _u64(id_))
        if raw is None:
            return None
        try:
            return message_class.FromString(raw)
        except DecodeError:
            return None

    def u64_key(self, database: str, rest: bytes) -> int | None:
        if len(rest) != U64_BYTES:
            self.report(0, f"{database}:{_printable(rest)}", "key is not M + u64be")
            return None
        return int.from_bytes(rest, "big")

    def u64_pair_key(self, database: str, rest: bytes) -> tuple[int, int] | None:
        if len(rest) != U64_PAIR_BYTES:
            self.report(0, f"{database}:{_printable(rest)}", "key is not M + u64be + u64be")
            return None
        return int.from_bytes(rest[:U64_BYTES], "big"), int.from_bytes(rest[U64_BYTES:], "big")

    def text_key(self, database: str, rest: bytes) -> str | None:
        try:
            return rest.decode("utf-8")
        except UnicodeDecodeError:
            self.report(0, f"{database}:{_printable(rest)}", "key is not UTF-8")
            return None

    def check_empty(self, key: str, value: bytes) -> None:
        if value:
            self.report(0, key, f"value is {len(value)} bytes, the layout says empty")

    def read_counter(self, name: str) -> int | None:
        """The counter's value (0 when absent); None, reported, if it is not a u64be."""
        raw = self.get("counters", name.encode())
        if raw is not None and len(raw) != U64_BYTES:
            self.report(0, f"counters:{name}", f"value is {len(raw)} bytes, not a u64be")
            return None
        return 0 if raw is None else int.from_bytes(raw, "big")

    def check_counter(self, name: str, last: int, invariant: int, what: str) -> None:
        value = self.read_counter(name)
        if value is not None and value != last:
            self.report(
                invariant,
                f"counters:{name}",
                f"counter is {value}, last {what} is {last}",
            )

    def seq_set(self, counter_name: str) -> _SeqSet | None:
        counter = self.read_counter(counter_name)
        if counter is None:
            return None
        if counter > SEQ_SET_COUNTER_MAX:
            message = f"counter is {counter}, above the {SEQ_SET_COUNTER_MAX} the auditor checks"
            self.report(0, f"counters:{counter_name}", message)
            return None
        return _SeqSet(counter)

    def report_missing(self, seqs: _SeqSet | None, invariant: int, what: str, name: str) -> None:
        if seqs is None:
            return
        ranges, missing_count = seqs.missing()
        if missing_count == 0:
            return
        shown = ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in ranges)
        if len(ranges) == MISSING_RANGES_REPORTED_MAX:
            shown += ", …"
        message = (
            f"counter is {seqs.counter}, {missing_count} {what} below it have no record: {shown}"
        )
        self.report(invariant, f"counters:{name}", message)

    def check_index_entry(self, key: str, database: str, value: str, id_: int, what: str) -> None:
        found = self.get(database, value.encode())
        shown = _printable(value, QUOTE_CHARS_MAX)
        if found is None:
            self.report(5, key, f"{shown} is missing from {database}")
        elif found != _u64(id_):
            self.report(5, key, f"{database} maps {shown} to {_u64_text(found, what)}")

    # --- format 3: the member_state views ---

    @property
    def member_state_layout(self) -> bool:
        return self.format >= FORMAT_MEMBER_STATE

    def read_format(self) -> int:
        """The merchant's `format` counter; when it is no u64be (reported), the layout its
        records are in says."""
        value = self.read_counter(COUNTER_FORMAT)
        if value is not None:
            return value
        found = next(self.keys("member_state"), None) is not None
        return FORMAT_MEMBER_STATE if found else 0

    def keys(self, database: str) -> Iterator[bytes]:
        """The keys (after `M 0x00`) of the merchant's records, in order, values unread."""
        if database not in self.databases:
            return
        cursor = self.transaction.cursor(self.databases[database])
        if not cursor.set_range(self.prefix):
            return
        for key in cursor.iternext(values=False):
            if not key.startswith(self.prefix):
                return
            yield key[len(self.prefix) :]

    def next_of_kind(self, rest: bytes, kind: int) -> bytes | None:
        """Where the next record of `kind` may be, from a member_state record of another
        kind: further on under the same member, else under the next one."""
        member = rest[:U64_BYTES]
        if rest[U64_BYTES] < kind:
            return self.prefix + member + bytes([kind])
        member_id = int.from_bytes(member, "big")
        if member_id == UNKNOWN:
            return None
        return self.prefix + _u64(member_id + 1) + bytes([kind])

    def member_state_view(self, database: str, under: bytes) -> Iterator[tuple[bytes, bytes]]:
        """`database` as the older formats kept it, read from member_state: each record that
        sits where the core looks for it, keyed as it was; the accounts no member owns
        still come from `accounts`."""
        kind = MEMBER_STATE_KINDS[database]
        if kind == KIND_ACCOUNT:
            for rest, value in self.records("accounts", under):
                if not OWNED_ACCOUNT.match(rest):  # an owned one there is left behind
                    yield rest, value
            if not any(p.startswith(under) or under.startswith(p) for p in OWNED_PREFIXES):
                return
        yield from self.member_state_kind(kind, under)

    def member_state_kind(self, kind: int, under: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key of the older layout, value) of the member_state records of `kind`, less
        those audit_member_state_keys (which runs first) rejected. One pass in key order
        that jumps from a member's records of `kind` to the next member's, so that reading
        one kind does not read every member's history."""
        database = self.databases.get("member_state")
        if database is None:
            return
        cursor = self.transaction.cursor(database)
        prefix, start = self.prefix, len(self.prefix)
        kind_at, tail_at = start + U64_BYTES, start + MEMBER_STATE_HEAD_BYTES
        # Accounts and buckets are keyed by their own name or card, the rest by member.
        by_member = kind not in (KIND_ACCOUNT, KIND_CARD_ORIGINS)
        rejected = self.member_state_rejected
        target: bytes | None = prefix
        while target is not None and cursor.set_range(target):
            target = None
            for key, value in cursor.iternext():
                if not key.startswith(prefix):
                    return
                if len(key) < tail_at:
                    continue  # reported by audit_member_state_keys
                if key[kind_at] != kind:
                    target = self.next_of_kind(key[start:], kind)
                    break
                if rejected and key[start:] in rejected:
                    continue
                rest = key[start:kind_at] + key[tail_at:] if by_member else key[tail_at:]
                if rest.startswith(under):
                    yield rest, value

    def member_state_place(self, database: str, rest: bytes) -> tuple[str, bytes] | None:
        """Where format 3 keeps what the older formats kept under `database` and `rest`:
        None when no member owns it (an account or buckets of a card that does not exist)."""
        kind = MEMBER_STATE_KINDS[database]
        if kind == KIND_ACCOUNT:
            match = OWNED_ACCOUNT.match(rest)
            if match is None:
                return "accounts", rest
            owner = self.account_owner(match)
        elif kind == KIND_CARD_ORIGINS:
            owner = self.card_owner(int.from_bytes(rest, "big"))
        else:
            return "member_state", rest[:U64_BYTES] + bytes([kind]) + rest[U64_BYTES:]
        if owner == UNKNOWN:
            return None
        return "member_state", _u64(owner) + bytes([kind]) + rest

    def card_owner(self, card_id: int) -> int:
        """The member whose records hold a card's accounts and buckets: its Card.member_id,
        known once audit_cards has run (before anything reads a card's accounts); for a
        card that does not exist or decode, where audit_member_state found them; else
        UNKNOWN."""
        owner = self.card_members.get(card_id)
        if owner is None or owner == UNKNOWN:
            return self.stray_card_members.get(card_id, UNKNOWN)
        return owner

    def card_member_at(self, card_id: int, member_id: int) -> int:
        """The card's member, to check a record of the card under `member_id`: UNKNOWN when
        the card does not exist or decode (then its records are taken where they are)."""
        owner = self.card_members.get(card_id)
        if owner is None or owner == UNKNOWN:
            self.stray_card_members.setdefault(card_id, member_id)
            return UNKNOWN
        return owner

    def account_owner(self, match: re.Match[bytes]) -> int:
        """The member whose records hold a member/{id}/... or card/{id}/... account."""
        number = int(match.group(2))
        return number if match.group(1) == b"member" else self.card_owner(number)

    def member_state_problem(self, member_id: int, kind: int, tail: bytes) -> str | None:
        """Why a member_state key does not parse or is not under the member who owns its
        record (invariant 24), or None. A batch's and a history entry's member are their
        record's and their entry's: invariants 21 and 9 check them."""
        if kind == KIND_MEMBER:
            return "a member record's key has bytes after its kind" if tail else None
        if kind == KIND_ACCOUNT:
            return self.account_problem(member_id, tail)
        if kind not in KIND_NAMES:
            return f"kind {kind} is none of 1-5"
        if len(tail) != U64_BYTES:
            return f"the key ends in {len(tail)} bytes after its kind, not a u64be"
        if kind == KIND_CARD_ORIGINS:
            owner = self.card_member_at(int.from_bytes(tail, "big"), member_id)
            if owner not in (member_id, UNKNOWN):
                return f"buckets of a card of member {owner}"
        return None

    def account_problem(self, member_id: int, name: bytes) -> str | None:
        if not name:
            return "an account key without a name"
        try:
            name.decode("utf-8")
        except UnicodeDecodeError:
            return "the account name is not UTF-8"
        match = OWNED_ACCOUNT.match(name)
        if match is None:
            return "no member owns this account: it belongs in accounts"
        number = int(match.group(2))
        if match.group(1) == b"card":
            number = self.card_member_at(number, member_id)
        if number not in (member_id, UNKNOWN):
            return f"an account of member {number}"
        return None

    # --- invariant 24 ---

    def audit_member_state(self) -> None:
        """At format 3: member_state is there, its keys parse and sit under their owner,
        nothing is left in the older databases. Below it: member_state holds nothing of the
        merchant (the core brings the merchant up when it opens the environment)."""
        if not self.member_state_layout:
            first, count = _first_and_count(self.keys("member_state"))
            if count:
                message = f"{_records(count)} in member_state, yet the merchant is at format "
                self.report(24, _member_state_text(first), f"{message}{self.format}")
            self.counts["member_state"] += count
            return
        if "member_state" not in self.databases:
            message = "named database member_state is missing, the merchant is at format "
            self.report(0, "member_state", f"{message}{self.format}")
        for database in OLD_LAYOUT_DATABASES:
            self.report_left_behind(database, self.keys(database))
        owned = (
            rest
            for under in OWNED_PREFIXES
            for rest, _ in self.records("accounts", under)
            if OWNED_ACCOUNT.match(rest)
        )
        self.report_left_behind("accounts", owned)
        self.audit_member_state_keys()

    def report_left_behind(self, database: str, keys: Iterator[bytes]) -> None:
        """One problem per database for what the upgrade to format 3 did not move."""
        first, count = _first_and_count(keys)
        if count:
            message = f"{_records(count)} left in the old layout: at format {self.format}"
            self.report(24, _old_key_text(database, first), f"{message} they are in member_state")

    def audit_member_state_keys(self) -> None:
        """One pass over the merchant's member_state keys (values unread): each parses and
        sits under its owner, and a member with records has its member record, which sorts
        first among them (kind 1). Rejected keys are kept for the views to leave out."""
        count, current, member_known = 0, b"", False
        for rest in self.keys("member_state"):
            count += 1
            if len(rest) < MEMBER_STATE_HEAD_BYTES:
                message = "key is not M + u64be(member id) + kind + its own part"
                self.report(24, f"member_state:{_printable(rest)}", message)
                self.member_state_rejected.add(rest)
                continue
            member, kind = rest[:U64_BYTES], rest[U64_BYTES]
            if member != current:
                current, member_known = member, False
            if kind == KIND_HISTORY and len(rest) == HISTORY_KEY_BYTES:
                problem = None  # most records: spared the call
            else:
                tail = rest[MEMBER_STATE_HEAD_BYTES:]
                problem = self.member_state_problem(int.from_bytes(member, "big"), kind, tail)
            if problem is not None:
                self.report(24, _member_state_text(rest), problem)
                self.member_state_rejected.add(rest)
            elif kind == KIND_MEMBER:
                member_known = True
            elif not member_known:
                member_id = int.from_bytes(member, "big")
                message = f"records of member {member_id}, who has no member record"
                self.report(24, f"member_state:{member_id}", message)
                member_known = True  # reported once per member
        self.counts["member_state"] += count

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

    # --- invariants 1, 2, and what 3, 4, 7, 8, 9 and 11 need from the ledger ---

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
                self.entry_members.append(seq, UNKNOWN)
                self.entry_kinds.append(0)
                continue
            self.request_hashes.append(seq, _text_hash(entry.request_id))
            self.entry_kinds.append(entry.kind if 0 <= entry.kind < 256 else 0)
            if entry.kind == records_pb2.REFUND:
                self.refund_seqs.add(seq)
            self.entry_members.append(seq, entry.member_id)
            if entry.member_id not in (0, UNKNOWN):
                self.entries_with_member += 1
            if entry.payer_member_id:
                self.note_payer(key, seq, entry)
            self.apply_entry(key, seq, entry)
        self.check_counter(COUNTER_LEDGER_SEQ, previous_seq, 1, "ledger entry")

    def note_payer(self, key: str, seq: int, entry: records_pb2.LedgerEntry) -> None:
        if entry.payer_member_id == entry.member_id or not entry.member_id:
            message = f"payer_member_id {entry.payer_member_id} with member_id {entry.member_id}"
            self.report(9, key, message + ": the payer is another member of a member's entry")
            return
        self.entry_payers[seq] = entry.payer_member_id

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
        coupon_fen = sum(a for n, a, _ in postings if n.endswith("/coupon_discount"))
        if coupon_fen and entry.kind == records_pb2.CHECKOUT:  # a refund gives it back
            self.coupon_discounts[seq] = -coupon_fen
        # Checked after the whole entry: the order of postings inside one entry is no
        # moment in time, but the state after each entry is.
        for name, _, _ in postings:
            if name.startswith(HELD_PREFIXES) and name not in self.negative_reported:
                balance = self.accounts[name].balance
                if balance < 0 and not self.points_debt(name, entry.kind, postings):
                    self.negative_reported.add(name)
                    message = f"balance {balance} after ledger entry {seq}"
                    self.report(4, f"accounts:{_printable(name)}", message)
        self.add_cumulative(key, entry)

    @staticmethod
    def points_debt(name: str, kind: int, postings: list[tuple[str, int, int]]) -> bool:
        """Points below zero are a debt (积分欠款) when a REFUND clawed back points the
        member had spent; any later entry may only pay it down (invariant 4)."""
        if not MEMBER_ACCOUNT.fullmatch(name):
            return False
        change = sum(amount for account, amount, _ in postings if account == name)
        return kind == records_pb2.REFUND or change > 0

    def add_cumulative(self, key: str, entry: records_pb2.LedgerEntry) -> None:
        if entry.kind not in KNOWN_ENTRY_KINDS:
            self.report(0, key, f"entry kind {entry.kind} is not one docs/STORAGE.md lists")
            return
        if entry.member_id == 0:
            if entry.kind == records_pb2.RECHARGE:
                self.report(7, key, "RECHARGE entry names no member")
            return
        # Every member an entry names is kept, so that a missing one is reported.
        sums = self.cumulative.setdefault(entry.member_id, [0, 0])
        if entry.kind == records_pb2.RECHARGE:
            sums[0] += entry.amount_fen
        elif entry.kind == records_pb2.CHECKOUT:
            sums[1] += entry.amount_fen
        elif entry.kind == records_pb2.REFUND:
            sums[1] -= entry.amount_fen

    def add_totals(self) -> None:
        totals = self.totals
        for name, account in self.accounts.items():
            if name.startswith("card/"):
                match = CARD_ACCOUNT.fullmatch(name)
                if match is None:
                    continue
                if match.group(2) == "principal":
                    totals.principal_fen += account.balance
                else:
                    totals.bonus_fen += account.balance
            elif name.startswith("member/"):
                if MEMBER_ACCOUNT.fullmatch(name):
                    totals.points += account.balance
            elif name.startswith("lot/"):
                match = LOT_ACCOUNT.fullmatch(name)
                if match is None:
                    continue
                if match.group(2):
                    totals.package_value_fen += account.balance
                else:
                    totals.uses += account.balance

    # --- invariants 5 and 6, from the cards' side ---

    def audit_cards(self) -> None:
        previous_id = 0
        for rest, value in self.segment("cards"):
            card_id = self.u64_key("cards", rest)
            if card_id is None:
                continue
            key = f"cards:{card_id}"
            if card_id != previous_id + 1:
                self.report(6, key, _gap_message("card id", previous_id, card_id))
            previous_id = card_id
            self.counts["cards"] += 1
            card = self.decode(key, value, card_pb2.Card)
            if card is None:
                self.card_members.put(card_id, UNKNOWN)
                self.card_number_hashes.put(card_id, UNKNOWN)
                self.card_statuses.put(card_id, 0)
                continue
            if card.card_id != card_id:
                self.report(6, key, f"record's card_id is {card.card_id}")
            self.card_members.put(card_id, card.member_id)
            self.card_number_hashes.put(card_id, _text_hash(card.card_no))
            self.card_statuses.put(card_id, card.status if 0 <= card.status < 256 else 255)
            self.check_card_indexed(key, card_id, card)
            self.note_attached(key, card_id, card)
            for message in _card_date_problems(card):
                self.report(14, key, message)
        self.check_counter(COUNTER_CARD_ID, previous_id, 6, "card id")

    def check_card_indexed(self, key: str, card_id: int, card: card_pb2.Card) -> None:
        if not card.card_no:
            self.report(5, key, "card has no card_no")
        else:
            self.check_index_entry(key, "card_numbers", card.card_no, card_id, "card")
        if card.member_id == 0:
            self.report(5, key, "card names no member")
        elif self.get("member_cards", _u64(card.member_id) + _u64(card_id)) is None:
            message = f"card is not listed in member_cards under its member {card.member_id}"
            self.report(5, key, message)

    def note_attached(self, key: str, card_id: int, card: card_pb2.Card) -> None:
        """Keeps what invariants 5 and 13 need of an attached card; checks its amounts."""
        if card.spending_limit_fen < 0 or card.spent_fen < 0:
            message = f"spending_limit_fen {card.spending_limit_fen}, spent_fen {card.spent_fen}"
            self.report(13, key, f"{message}: neither may be negative")
        if not card.primary_card_id and not card.link_kind:
            if card.spending_limit_fen or card.spent_fen:
                self.report(13, key, "a card of its own has a spending limit or spent amount")
            return
        live = card.status not in CARD_STATUSES_GONE
        self.attached[card_id] = (card.primary_card_id, card.link_kind, card.member_id, live)
        if card.primary_card_id and live:
            self.live_subsidiaries[card_id] = card.primary_card_id

    def audit_card_owners(self) -> None:
        """Run after the members: every card's member exists."""
        for card_id, member_id in self.card_members.items():
            if member_id not in (0, UNKNOWN) and member_id not in self.member_phone_hashes:
                message = f"card of member {member_id}, which does not exist"
                self.report(5, f"cards:{card_id}", message)

    def audit_member_cards(self) -> None:
        for rest, value in self.segment("member_cards"):
            pair = self.u64_pair_key("member_cards", rest)
            if pair is None:
                continue
            member_id, card_id = pair
            key = f"member_cards:{member_id}/{card_id}"
            self.counts["member_cards"] += 1
            self.check_empty(key, value)
            owner = self.card_members.get(card_id)
            if owner is None:
                self.report(5, key, f"card {card_id} does not exist")
            elif owner not in (member_id, UNKNOWN):
                self.report(5, key, f"card {card_id} belongs to member {owner}")

    def audit_subsidiaries(self) -> None:
        """`subsidiaries` lists exactly the live attached cards under their primary."""
        expected = dict(self.live_subsidiaries)
        for rest, value in self.segment("subsidiaries"):
            pair = self.u64_pair_key("subsidiaries", rest)
            if pair is None:
                continue
            primary_id, card_id = pair
            key = f"subsidiaries:{primary_id}/{card_id}"
            self.check_empty(key, value)
            if expected.pop(card_id, None) != primary_id:
                message = f"card {card_id} is not a live card attached to card {primary_id}"
                self.report(5, key, message)
        for card_id, primary_id in sorted(expected.items()):
            message = f"live card attached to card {primary_id} is missing from subsidiaries"
            self.report(5, f"cards:{card_id}", message)

    def audit_attached(self) -> None:
        """Invariant 13: each attached card's primary and holder; GROUP cards or none."""
        group_kinds: dict[int, set[bool]] = {}
        for card_id, (primary_id, link_kind, member_id, live) in sorted(self.attached.items()):
            key = f"cards:{card_id}"
            problem = self.attached_problem(card_id, primary_id, link_kind, member_id)
            if problem is not None:
                self.report(13, key, problem)
            elif live:
                group_kinds.setdefault(primary_id, set()).add(link_kind == card_pb2.GROUP)
        for primary_id, kinds in sorted(group_kinds.items()):
            if len(kinds) > 1:
                message = "both GROUP and personal (SUBSIDIARY, LINKED) cards draw on it"
                self.report(13, f"cards:{primary_id}", message)

    def attached_problem(
        self, card_id: int, primary_id: int, link_kind: int, member_id: int
    ) -> str | None:
        if link_kind not in LINK_KINDS:
            return f"link_kind {link_kind} is not a link kind"
        if not primary_id:
            return f"link_kind {card_pb2.LinkKind.Name(link_kind)} without a primary card"
        primary_member = self.card_members.get(primary_id)
        if primary_id == card_id or primary_member is None:
            return f"its primary card {primary_id} does not exist or is itself"
        if primary_id in self.attached and self.attached[primary_id][0]:
            return f"its primary card {primary_id} is attached to another card itself"
        if UNKNOWN in (primary_member, member_id):
            return None
        if link_kind == card_pb2.SUBSIDIARY and member_id != primary_member:
            return f"a SUBSIDIARY of member {member_id} on a card of member {primary_member}"
        if link_kind == card_pb2.LINKED and member_id == primary_member:
            return f"a LINKED card of its primary's own member {member_id}"
        return None

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
            recharged_fen, spent_fen = self.cumulative.pop(member_id, [0, 0])
            member = self.decode(key, value, member_pb2.Member)
            if member is None:
                self.member_phone_hashes.put(member_id, UNKNOWN)
                self.member_name_hashes.put(member_id, UNKNOWN)
                continue
            if member.member_id != member_id:
                self.report(6, key, f"record's member_id is {member.member_id}")
            self.member_phone_hashes.put(member_id, _text_hash(member.phone))
            self.member_name_hashes.put(member_id, _text_hash(search_key(member.name)))
            self.check_reachable(key, member_id, member)
            self.check_default_card(key, member_id, member.default_card_id)
            if member.cumulative_recharge_fen != recharged_fen:
                message = f"cumulative_recharge_fen {member.cumulative_recharge_fen}"
                self.report(7, key, f"{message}, RECHARGE entries sum to {recharged_fen}")
            if member.cumulative_spend_fen != spent_fen:
                message = f"cumulative_spend_fen {member.cumulative_spend_fen}"
                message += f", CHECKOUT less REFUND entries sum to {spent_fen}"
                self.report(7, key, message)
        self.check_counter(COUNTER_MEMBER_ID, previous_id, 6, "member id")
        for member_id in sorted(self.cumulative):
            self.report(7, f"members:{member_id}", "ledger entries name this missing member")

    def check_reachable(self, key: str, member_id: int, member: member_pb2.Member) -> None:
        if not member.phone:
            self.report(5, key, "member has no phone")
        else:
            self.check_index_entry(key, "phones", member.phone, member_id, "member")
        if not member.card_no:
            return
        shown = _printable(member.card_no, QUOTE_CHARS_MAX)
        found = self.get("card_numbers", member.card_no.encode())
        if found is None or len(found) != U64_BYTES:
            self.report(5, key, f"card_no {shown} names no card in card_numbers")
            return
        card_id = int.from_bytes(found, "big")
        owner = self.card_members.get(card_id)
        if owner not in (member_id, UNKNOWN):
            self.report(5, key, f"card_no {shown} is card {card_id}, not one of this member's")

    def check_default_card(self, key: str, member_id: int, default_card_id: int) -> None:
        if default_card_id:
            owner = self.card_members.get(default_card_id)
            if owner is None:
                self.report(5, key, f"default card {default_card_id} does not exist")
            elif owner not in (member_id, UNKNOWN):
                message = f"default card {default_card_id} belongs to member {owner}"
                self.report(5, key, message)
            return
        for rest, _ in self.segment("member_cards", _u64(member_id)):
            if len(rest) != U64_PAIR_BYTES:
                continue  # reported when member_cards is streamed
            card_id = int.from_bytes(rest[U64_BYTES:], "big")
            status = self.card_statuses.get(card_id)
            if status is not None and status not in CARD_STATUSES_GONE:
                message = f"default_card_id is 0, yet card {card_id} is neither closed nor replaced"
                self.report(5, key, message)
                return

    # --- invariant 5, from the indexes' side ---

    def phone_of(self, member_id: int) -> str | None:
        member = self.read("members", member_id, member_pb2.Member)
        return None if member is None else member.phone

    def card_number_of(self, card_id: int) -> str | None:
        card = self.read("cards", card_id, card_pb2.Card)
        return None if card is None else card.card_no

    def audit_index(
        self, database: str, what: str, field_name: str, hashes: _IdTable, field_of: Any
    ) -> None:
        """`phones` or `card_numbers`: each value names a record whose field is the key."""
        for rest, value in self.segment(database):
            key = f"{database}:{_printable(rest)}"
            self.counts[database] += 1
            if len(value) != U64_BYTES:
                self.report(5, key, f"value is {len(value)} bytes, not a u64be {what} id")
                continue
            target_id = int.from_bytes(value, "big")
            expected_hash = hashes.get(target_id)
            if expected_hash is None:
                self.report(5, key, f"points at {what} {target_id}, which does not exist")
                continue
            text = self.text_key(database, rest)
            if expected_hash == UNKNOWN or text is None or _text_hash(text) == expected_hash:
                continue
            actual = field_of(target_id)
            if actual is not None and actual != text:
                shown = _printable(actual, QUOTE_CHARS_MAX)
                message = f"points at {what} {target_id}, whose {field_name} is {shown}"
                self.report(5, key, message)

    # --- invariant 16 ---

    def kind_of(self, seq: int) -> int | None:
        position = self.request_hashes.position(seq)
        return None if position is None else self.entry_kinds[position]

    def audit_settlements(self) -> None:
        unclaimed = set(self.refund_seqs)
        for rest, value in self.segment("settlements"):
            seq = self.u64_key("settlements", rest)
            if seq is None:
                continue
            key = f"settlements:{seq}"
            self.counts["settlements"] += 1
            settlement = self.decode(key, value, records_pb2.Settlement)
            if settlement is None:
                continue
            self.check_settlement_entry(key, seq, settlement)
            for message in _settlement_problems(settlement):
                self.report(16, key, message)
            for refund_seq in settlement.refund_seqs:
                if self.kind_of(refund_seq) != records_pb2.REFUND:
                    self.report(16, key, f"refund seq {refund_seq} is no REFUND entry")
                elif refund_seq not in unclaimed:
                    self.report(16, key, f"REFUND entry {refund_seq} is listed twice")
                else:
                    unclaimed.discard(refund_seq)
        for refund_seq in sorted(unclaimed):
            self.report(16, f"ledger:{refund_seq}", "REFUND entry that no settlement lists")

    def check_settlement_entry(self, key: str, seq: int, settlement: Any) -> None:
        if settlement.seq != seq:
            self.report(16, key, f"record's seq field is {settlement.seq}")
        if self.kind_of(seq) != records_pb2.CHECKOUT:
            self.report(16, key, "the ledger entry of its seq is no CHECKOUT")
        elif self.request_hashes.get(seq) != _text_hash(settlement.request_id):
            self.report(16, key, "its request_id is not its CHECKOUT entry's")
        elif self.entry_members.get(seq) != settlement.member_id:
            self.report(16, key, "its member is not its CHECKOUT entry's")

    # --- invariant 17 ---

    def audit_catalog(self) -> None:
        barcodes: dict[str, str] = {}
        for rest, value in self.segment("catalog"):
            key = f"catalog:{_printable(rest)}"
            self.counts["catalog"] += 1
            sku = self.text_key("catalog", rest)
            item = self.decode(key, value, catalog_pb2.CatalogItem)
            if sku is None or item is None:
                continue
            if item.sku != sku:
                self.report(17, key, f"record's sku is {_printable(item.sku)}")
            if item.barcode:
                barcodes[item.barcode] = sku
        for rest, value in self.segment("barcodes"):
            key = f"barcodes:{_printable(rest)}"
            barcode = self.text_key("barcodes", rest)
            if barcode is None:
                continue
            owner = barcodes.pop(barcode, None)
            if owner is None or owner.encode() != value:
                self.report(17, key, f"points at {_printable(value)}, no item with that barcode")
        for barcode, sku in sorted(barcodes.items()):
            self.report(17, f"catalog:{_printable(sku)}", f"barcode {barcode} is not indexed")

    # --- invariant 15 ---

    def audit_merchant_keys(self) -> None:
        """One MerchantKeys under `M` for a merchant with a config, none for another. The
        key itself is never shown."""
        keys_found = 0
        for rest, value in self.segment("merchant_keys"):
            key = f"merchant_keys:{_printable(rest)}"
            if rest:
                self.report(0, key, "key has bytes after the merchant id")
                continue
            keys_found += 1
            self.counts["merchant_keys"] += 1
            keys = self.decode(key, value, records_pb2.MerchantKeys)
            if keys is not None and len(keys.member_code_key) != MEMBER_CODE_KEY_BYTES:
                size = len(keys.member_code_key)
                self.report(
                    15, key, f"member_code_key is {size} bytes, not {MEMBER_CODE_KEY_BYTES}"
                )
        configured = self.get("config", b"") is not None
        if configured and not keys_found:
            self.report(15, "merchant_keys:", "the merchant has a config but no member-code key")
        if keys_found and not configured:
            self.report(15, "merchant_keys:", "a member-code key, yet the merchant has no config")

    # --- chain effects: staff (layout), invariants 18 and 19 ---

    def audit_staff(self) -> None:
        for rest, value in self.segment("staff"):
            key = f"staff:{_printable(rest)}"
            self.counts["staff"] += 1
            staff = self.decode(key, value, chain_pb2.Staff)
            if staff is not None and staff.code.encode() != rest:
                self.report(0, key, f"record's code is {_printable(staff.code)}")

    # --- staff tokens and the audit log, invariants 22 and 23 ---

    def audit_staff_tokens(self) -> None:
        """Invariant 22: each `M + staff + 0x00 + hash` names a stored token of this
        merchant and that staff member, who is registered."""
        merchant = self.prefix[:-1].decode("utf-8", "replace")
        tokens = self.databases.get("tokens")
        for rest, value in self.segment("staff_tokens"):
            key = f"staff_tokens:{_printable(rest)}"
            self.counts["staff_tokens"] += 1
            staff_code, separator, token_hash = rest.partition(SEPARATOR)
            if not separator or len(token_hash) != TOKEN_HASH_BYTES or value:
                self.report(0, key, "not staff code + 0x00 + a 32-byte hash with an empty value")
                continue
            raw = None if tokens is None else self.transaction.get(token_hash, db=tokens)
            if raw is None:
                self.report(22, key, "names a token that is not stored")
                continue
            record = self.decode(key, raw, records_pb2.TokenRecord)
            if record is not None and (record.merchant, record.staff_code.encode()) != (
                merchant,
                staff_code,
            ):
                self.report(22, key, f"the token is of {record.merchant}/{record.staff_code}")
            if self.get("staff", staff_code) is None:
                self.report(22, key, "the staff member is not registered")

    def audit_audit_log(self) -> None:
        """Invariant 23: entries 1..audit_seq, each the change of a request that was made
        (its request record, answered without error, of the same method), and the staff
        index lists exactly the entries that name a staff member."""
        last = self.read_counter("audit_seq")
        expected = 1
        named: set[tuple[bytes, int]] = set()
        for rest, value in self.segment("audit_log"):
            key = f"audit_log:{_printable(rest)}"
            self.counts["audit_log"] += 1
            seq = int.from_bytes(rest, "big") if len(rest) == U64_BYTES else -1
            entry = self.decode(key, value, records_pb2.AuditEntry)
            if entry is None or seq != entry.audit_seq:
                self.report(0, key, "key is not the u64be of the entry's audit_seq")
                continue
            if seq != expected:
                self.report(23, key, f"entry {seq} follows {expected - 1}")
            expected = seq + 1
            if entry.staff_code:
                named.add((entry.staff_code.encode(), seq))
            raw = self.get("requests", entry.request_id.encode())
            request = None if raw is None else self.decode(key, raw, records_pb2.RequestRecord)
            if request is None:
                self.report(23, key, "names a request that has no record")
            elif request.error_reason or request.method != entry.method:
                self.report(23, key, f"names a request that failed or was a {request.method}")
        if last is not None and last != expected - 1:
            self.report(23, "counters:audit_seq", f"counter is {last}, last entry {expected - 1}")
        indexed: set[tuple[bytes, int]] = set()
        for rest, value in self.segment("audit_staff"):
            self.counts["audit_staff"] += 1
            # staff code + 0x00 + u64be(seq): the seq's own bytes may hold 0x00
            if len(rest) < U64_BYTES + 2 or rest[-U64_BYTES - 1 : -U64_BYTES] != SEPARATOR or value:
                self.report(0, f"audit_staff:{_printable(rest)}", "not staff + 0x00 + u64be")
                continue
            indexed.add((rest[: -U64_BYTES - 1], int.from_bytes(rest[-U64_BYTES:], "big")))
        for staff_code, seq in sorted(named ^ indexed):
            where = "missing from" if (staff_code, seq) in named else "not in the log but in"
            self.report(
                23, f"audit_staff:{_printable(staff_code)}", f"entry {seq} {where} the index"
            )

    def account_balance(self, name: str) -> int:
        raw = self.get("accounts", name.encode())
        if raw is None:
            return 0
        try:
            return records_pb2.AccountRecord.FromString(raw).balance
        except DecodeError:
            return 0  # reported with the accounts

    def audit_card_origins(self) -> None:
        """Invariant 18: each card's buckets, one per store, positive, add up to its
        principal and bonus; a card holding value has buckets."""
        with_origins: set[int] = set()
        for rest, value in self.segment("card_origins"):
            key = f"card_origins:{_printable(rest)}"
            self.counts["card_origins"] += 1
            card_id = self.u64_key("card_origins", rest)
            origins = self.decode(key, value, records_pb2.CardOrigins)
            if card_id is None or origins is None:
                continue
            with_origins.add(card_id)
            if card_id not in self.card_members:
                self.report(18, key, f"buckets of card {card_id}, which does not exist")
            for which, buckets in (("principal", origins.principal), ("bonus", origins.bonus)):
                self.check_buckets(key, card_id, which, buckets)
        for rest, value in self.segment("accounts", b"card/"):
            match = CARD_ACCOUNT.fullmatch(rest.decode("utf-8", "replace"))
            if match is None or int(match.group(1)) in with_origins:
                continue
            if int(match.group(1)) not in self.card_members:
                continue  # reported under invariant 0
            try:
                balance = records_pb2.AccountRecord.FromString(value).balance
            except DecodeError:
                continue
            if balance > 0:  # a negative one is reported under invariant 4
                name = _printable(rest)
                self.report(
                    18, f"accounts:{name}", f"holds {balance} fen but the card has no buckets"
                )

    def check_buckets(self, key: str, card_id: int, which: str, buckets: Any) -> None:
        stores = [bucket.store_code for bucket in buckets]
        if len(set(stores)) != len(stores):
            self.report(18, key, f"{which}: a store has two buckets")
        if any(bucket.amount_fen <= 0 for bucket in buckets):
            self.report(18, key, f"{which}: a bucket is not positive")
        held = sum(bucket.amount_fen for bucket in buckets)
        balance = self.account_balance(f"card/{card_id}/{which}")
        if held != balance and balance >= 0:
            self.report(
                18, key, f"{which} buckets hold {held} fen, the card's balance is {balance}"
            )

    def audit_clearing_days(self) -> None:
        """Invariant 19: per store pair (A, B), the days' cells add up to the balance of
        store/A/owes/B, and store/B/owed_by/A is its opposite."""
        sums: dict[tuple[str, str], int] = {}
        for rest, value in self.segment("clearing_days"):
            key = f"clearing_days:{_printable(rest)}"
            self.counts["clearing_days"] += 1
            cell = self.decode(key, value, chain_pb2.ClearingCell)
            if cell is None:
                continue
            expected = f"{cell.from_store}\x00{cell.to_store}".encode()
            day = int.from_bytes(rest[:CLEARING_DAY_BYTES], "big") - CLEARING_DAY_KEY_BIAS
            if rest[CLEARING_DAY_BYTES:] != expected or day < -25_567:  # 1900-01-01
                self.report(19, key, "key is not M + u32be(day) + from + 0x00 + to of its cell")
                continue
            pair = (cell.from_store, cell.to_store)
            sums[pair] = sums.get(pair, 0) + cell.amount_fen
        for rest, _ in self.segment("accounts", b"store/"):
            match = CLEARING_ACCOUNT.fullmatch(rest.decode("utf-8", "replace"))
            if match is not None:
                owes = match.group(2) == "owes"
                pair = (
                    (match.group(1), match.group(3)) if owes else (match.group(3), match.group(1))
                )
                sums.setdefault(pair, 0)
        for (from_store, to_store), total in sorted(sums.items()):
            owes = self.account_balance(f"store/{from_store}/owes/{to_store}")
            owed = self.account_balance(f"store/{to_store}/owed_by/{from_store}")
            if owes != total or owed != -total:
                message = (
                    f"days add up to {total} fen; store/{from_store}/owes/{to_store} holds {owes}, "
                    f"store/{to_store}/owed_by/{from_store} {owed}"
                )
                self.report(19, f"clearing:{from_store}->{to_store}", message)

    # --- invariant 21 ---

    def audit_points_batches(self) -> None:
        """Batches under existing members, ids unique and within their counter, and each
        member's batches holding exactly the positive part of their points balance."""
        held: dict[int, int] = {}
        seen_ids: set[int] = set()
        counter = self.read_counter(COUNTER_POINTS_BATCH_ID)
        for rest, value in self.segment("points_batches"):
            ids = self.u64_pair_key("points_batches", rest)
            if ids is None:
                continue
            member_id, batch_id = ids
            key = f"points_batches:{member_id}/{batch_id}"
            self.counts["points_batches"] += 1
            batch = self.decode(key, value, records_pb2.PointsBatch)
            if batch is None:
                continue
            for message in _batch_problems(batch, member_id, batch_id, counter):
                self.report(21, key, message)
            if member_id not in self.member_phone_hashes:
                self.report(21, key, f"batch of member {member_id}, who does not exist")
            held[member_id] = held.get(member_id, 0) + max(batch.points_left, 0)
            if batch_id in seen_ids:
                self.report(21, key, f"batch id {batch_id} is under another member too")
            seen_ids.add(batch_id)
        for name, account in self.accounts.items():
            match = MEMBER_ACCOUNT.fullmatch(name)
            if match is None:
                continue
            member_id = int(match.group(1))
            in_batches = held.pop(member_id, 0)
            if in_batches != max(account.balance, 0):
                message = f"batches hold {in_batches} points, the balance is {account.balance}"
                self.report(21, f"accounts:{_printable(name)}", message)
        for member_id, in_batches in sorted(held.items()):
            message = f"batches hold {in_batches} points, the member has no points account"
            self.report(21, f"points_batches:{member_id}", message)

    # --- invariant 20 ---

    def audit_coupons(self) -> None:
        """Coupons run 1..n by id under their key; each is indexed by its code and under
        its member, which exists; names a template of the config; is kept ISSUED, REDEEMED
        or VOID; a REDEEMED one names the checkout entry of its member that posted its
        discount, and the coupons of an entry add up to the discount it posted."""
        templates = self.coupon_templates()
        codes: dict[str, int] = {}
        owners: dict[int, int] = {}
        uses_of: dict[int, tuple[int, int, int]] = {}
        previous_id = 0
        for rest, value in self.segment("coupons"):
            coupon_id = self.u64_key("coupons", rest)
            if coupon_id is None:
                continue
            key = f"coupons:{coupon_id}"
            if coupon_id != previous_id + 1:
                self.report(20, key, _gap_message("coupon id", previous_id, coupon_id))
            previous_id = coupon_id
            self.counts["coupons"] += 1
            coupon = self.decode(key, value, coupon_pb2.Coupon)
            if coupon is None:
                continue
            codes[coupon.code] = coupon_id
            owners[coupon_id] = coupon.member_id
            uses_of[coupon_id] = (coupon.state, coupon.redeemed_seq, coupon.restored_by_seq)
            for message in self.coupon_problems(coupon_id, coupon, templates):
                self.report(20, key, message)
        self.check_counter(COUNTER_COUPON_ID, previous_id, 20, "coupon")
        for seq, discount_fen in sorted(self.coupon_discounts.items()):
            settlement = self.settlement(seq)
            taken = None if settlement is None else sum(u.discount_fen for u in settlement.coupons)
            if taken != discount_fen:
                message = (
                    f"posts {discount_fen} fen of coupon discount; its settlement's coupons took "
                )
                self.report(20, f"ledger:{seq}", message + f"{taken} fen")
            self.check_coupon_uses(seq, [] if settlement is None else settlement.coupons, uses_of)
        self.audit_coupon_indexes(codes, owners)

    def check_coupon_uses(
        self, seq: int, uses: Any, uses_of: dict[int, tuple[int, int, int]]
    ) -> None:
        """Each coupon a settlement used is still REDEEMED by it, or was restored since."""
        for use in uses:
            state, redeemed_seq, restored_by_seq = uses_of.get(use.coupon_id, (0, 0, 0))
            used_here = state == coupon_pb2.COUPON_STATE_REDEEMED and redeemed_seq == seq
            if not (used_here or restored_by_seq):
                message = f"its settlement used coupon {use.coupon_id}, which is neither "
                self.report(20, f"ledger:{seq}", message + "REDEEMED by it nor restored")

    def coupon_templates(self) -> set[str] | None:
        """The template codes of the config; None when it is missing or does not decode
        (reported with the config)."""
        raw = self.get("config", b"")
        try:
            return (
                None
                if raw is None
                else {t.code for t in config_pb2.MerchantConfig.FromString(raw).coupon_templates}
            )
        except DecodeError:
            return None

    def coupon_problems(self, coupon_id: int, coupon: Any, templates: set[str] | None) -> list[str]:
        problems = []
        if coupon.coupon_id != coupon_id:
            problems.append(f"record's coupon_id is {coupon.coupon_id}")
        if not COUPON_CODE.fullmatch(coupon.code):
            problems.append(f"code {_printable(coupon.code, QUOTE_CHARS_MAX)} is not a coupon code")
        elif self.get("coupon_codes", coupon.code.encode()) != _u64(coupon_id):
            problems.append(f"code {coupon.code} does not point at it in coupon_codes")
        if coupon.member_id not in self.member_phone_hashes:
            problems.append(f"member {coupon.member_id} does not exist")
        if self.get("member_coupons", _u64(coupon.member_id) + _u64(coupon_id)) is None:
            problems.append(f"not listed in member_coupons under member {coupon.member_id}")
        if templates is not None and coupon.template_code not in templates:
            problems.append(f"template {_printable(coupon.template_code)} is not in the config")
        first, last = _parse_date(coupon.valid_from), _parse_date(coupon.valid_until)
        if first is None or last is None or first > last:
            problems.append(
                f"window {coupon.valid_from}..{coupon.valid_until} is not two dates in order"
            )
        if coupon.state not in COUPON_STATES_KEPT:
            problems.append(f"state {coupon.state} is not one a coupon is kept in")
        if coupon.state == coupon_pb2.COUPON_STATE_REDEEMED:
            problems += self.redemption_problems(coupon)
        elif coupon.redeemed_seq:
            problems.append(f"not REDEEMED, yet it names checkout {coupon.redeemed_seq}")
        if coupon.restored_by_seq and self.entry_members.get(coupon.restored_by_seq) is None:
            problems.append(f"restored by {coupon.restored_by_seq}, which is no ledger entry")
        return problems

    def settlement(self, seq: int) -> Any:
        """The settlement kept under a checkout's seq, None if absent or undecodable."""
        raw = self.get("settlements", _u64(seq))
        try:
            return None if raw is None else records_pb2.Settlement.FromString(raw)
        except DecodeError:
            return None

    def redemption_problems(self, coupon: Any) -> list[str]:
        seq = coupon.redeemed_seq
        if coupon.discount_fen <= 0:
            return [f"REDEEMED for {coupon.discount_fen} fen"]
        if seq not in self.coupon_discounts:
            return [f"REDEEMED by {seq}, which is no entry with a coupon discount"]
        if self.entry_members.get(seq) != coupon.member_id:
            return [f"REDEEMED by {seq}, an entry of member {self.entry_members.get(seq)}"]
        settlement = self.settlement(seq)
        uses = [] if settlement is None else settlement.coupons
        if not any(
            (u.coupon_id, u.discount_fen) == (coupon.coupon_id, coupon.discount_fen) for u in uses
        ):
            return [
                f"REDEEMED by {seq} for {coupon.discount_fen} fen; its settlement does not say so"
            ]
        return []

    def audit_coupon_indexes(self, codes: dict[str, int], owners: dict[int, int]) -> None:
        for rest, value in self.segment("coupon_codes"):
            key = f"coupon_codes:{_printable(rest)}"
            self.counts["coupon_codes"] += 1
            code = self.text_key("coupon_codes", rest)
            if code is not None and (
                len(value) != U64_BYTES or codes.get(code) != int.from_bytes(value, "big")
            ):
                self.report(20, key, f"points at {_u64_text(value, 'coupon')}, whose code differs")
        for rest, value in self.segment("member_coupons"):
            key = f"member_coupons:{_printable(rest)}"
            self.counts["member_coupons"] += 1
            self.check_empty(key, value)
            pair = self.u64_pair_key("member_coupons", rest)
            if pair is not None and owners.get(pair[1]) != pair[0]:
                self.report(20, key, f"coupon {pair[1]} is not a coupon of member {pair[0]}")

    # --- invariant 10 ---

    def audit_names(self) -> None:
        for rest, value in self.segment("names"):
            self.counts["names"] += 1
            if len(rest) <= U64_BYTES + 1 or rest[-U64_BYTES - 1] != 0:
                message = "key is not M + name + 0x00 + u64be"
                self.report(0, f"names:{_printable(rest)}", message)
                continue
            name_bytes, member_id = rest[: -U64_BYTES - 1], int.from_bytes(rest[-U64_BYTES:], "big")
            key = f"names:{_printable(name_bytes)}/{member_id}"
            self.check_empty(key, value)
            expected_hash = self.member_name_hashes.get(member_id)
            if expected_hash is None:
                self.report(10, key, f"member {member_id} does not exist")
                continue
            name = self.text_key("names", name_bytes)
            if expected_hash == UNKNOWN or name is None or _text_hash(name) == expected_hash:
                continue
            member = self.read("members", member_id, member_pb2.Member)
            if member is not None and search_key(member.name) != name:
                shown = _printable(member.name, QUOTE_CHARS_MAX)
                self.report(10, key, f"member {member_id} is named {shown}")

    # --- invariant 11 ---

    def lot_sums(self) -> dict[int, _LotSums]:
        """The ledger's balance of every lot account, by lot."""
        sums: dict[int, _LotSums] = {}
        for name, account in self.accounts.items():
            match = LOT_ACCOUNT.fullmatch(name) if name.startswith("lot/") else None
            if match is None:
                continue  # not a lot account, or a name audit_accounts reports
            lot = sums.setdefault(int(match.group(1)), _LotSums())
            if match.group(2):
                lot.value_fen = account.balance
            else:
                lot.uses[match.group(3)] = account.balance
        return sums

    def audit_lots(self) -> None:
        lot_sums = self.lot_sums()
        lot_ids = self.seq_set(COUNTER_LOT_ID)
        for rest, value in self.segment("lots"):
            pair = self.u64_pair_key("lots", rest)
            if pair is None:
                continue
            card_id, lot_id = pair
            key = f"lots:{card_id}/{lot_id}"
            self.counts["lots"] += 1
            problem = None if lot_ids is None else lot_ids.mark(lot_id)
            if problem is not None:
                self.report(11, key, f"lot id {lot_id} {problem}")
            sums = lot_sums.pop(lot_id, None) or _LotSums()
            lot = self.decode(key, value, card_pb2.CountLot)
            if lot is None:
                continue
            self.check_lot_place(key, card_id, lot_id, lot)
            self.check_lot_record(key, lot)
            self.check_lot_accounts(key, lot, sums)
        self.report_missing(lot_ids, 11, "lot ids", COUNTER_LOT_ID)
        for lot_id in sorted(lot_sums):
            self.report(11, f"accounts:lot/{lot_id}", f"lot {lot_id} has accounts but no record")

    def check_lot_place(self, key: str, card_id: int, lot_id: int, lot: card_pb2.CountLot) -> None:
        if lot.card_id != card_id:
            self.report(11, key, f"record's card_id is {lot.card_id}")
        if lot.lot_id != lot_id:
            self.report(11, key, f"record's lot_id is {lot.lot_id}")
        status = self.card_statuses.get(card_id)
        if status is None:
            self.report(11, key, f"card {card_id} does not exist")
        elif status == card_pb2.REPLACED:
            self.report(11, key, f"card {card_id} was replaced: its lots move to the new card")

    def check_lot_record(self, key: str, lot: card_pb2.CountLot) -> None:
        """The record agrees with itself: items once each, totals that add up, nothing
        left on a refunded lot."""
        codes = [item.item_code for item in lot.items]
        if len(set(codes)) != len(codes):
            self.report(11, key, "an item appears twice among the lot's items")
        items_total = sum(item.uses_total for item in lot.items)
        if lot.uses_total != items_total:
            message = (
                f"uses_total is {lot.uses_total}, its items' uses_total add up to {items_total}"
            )
            self.report(11, key, message)
        for item in lot.items:
            shown = _printable(item.item_code, QUOTE_CHARS_MAX)
            if item.uses_left > item.uses_total:
                message = f"item {shown} has {item.uses_left} uses left of {item.uses_total}"
                self.report(11, key, message)
            if lot.refunded and item.uses_left != 0:
                self.report(11, key, f"lot is refunded, yet item {shown} has uses left")

    def check_lot_accounts(self, key: str, lot: card_pb2.CountLot, sums: _LotSums) -> None:
        state = "refunded" if lot.refunded else "not refunded"
        expected = {} if lot.refunded else {item.item_code: item.uses_left for item in lot.items}
        for code in sorted(set(expected) | set(sums.uses)):
            held, said = sums.uses.get(code, 0), expected.get(code, 0)
            if held != said:
                account = _printable(f"lot/{lot.lot_id}/uses/{code}", QUOTE_CHARS_MAX)
                self.report(11, key, f"{account} holds {held}, the lot ({state}) says {said}")
        value_fen = 0 if lot.refunded else _lot_value_left_fen(lot)
        if sums.value_fen != value_fen:
            account = f"lot/{lot.lot_id}/value"
            message = f"{account} holds {sums.value_fen}, the lot ({state}) says {value_fen}"
            self.report(11, key, message)

    # --- invariant 12 ---

    def audit_children(self, kind: _ChildKind) -> None:
        seqs = self.seq_set(kind.counter)
        owners = self.card_members if kind.owner == "card" else self.member_phone_hashes
        for rest, value in self.segment(kind.database):
            pair = self.u64_pair_key(kind.database, rest)
            if pair is None:
                continue
            owner_id, seq = pair
            key = f"{kind.database}:{owner_id}/{seq}"
            self.counts[kind.database] += 1
            problem = None if seqs is None else seqs.mark(seq)
            if problem is not None:
                self.report(12, key, f"seq {seq} {problem}")
            if owner_id not in owners:
                self.report(12, key, f"{kind.owner} {owner_id} does not exist")
            record = self.decode(key, value, kind.message_class)
            if record is not None:
                self.check_child(key, kind, record, (owner_id, seq))
        self.report_missing(seqs, 12, "seqs", kind.counter)

    def check_child(self, key: str, kind: _ChildKind, record: Any, place: tuple[int, int]) -> None:
        """The record repeats the owner id and seq of its key; its ledger entry exists."""
        for field_name, expected in ((kind.owner_field, place[0]), (kind.seq_field, place[1])):
            if getattr(record, field_name) != expected:
                self.report(12, key, f"record's {field_name} is {getattr(record, field_name)}")
        ledger_seq = getattr(record, "ledger_seq", 0)
        if ledger_seq and self.entry_members.position(ledger_seq) is None:
            self.report(12, key, f"ledger_seq {ledger_seq}, and there is no such entry")

    # --- invariant 9 ---

    def audit_member_ledger(self) -> None:
        members = self.entry_members
        seen = bytearray(len(members.values))
        payers_seen: set[int] = set()
        matched = 0
        for rest, value in self.segment("member_ledger"):
            pair = self.u64_pair_key("member_ledger", rest)
            if pair is None:
                continue
            member_id, seq = pair
            key = f"member_ledger:{member_id}/{seq}"
            self.counts["member_ledger"] += 1
            self.check_empty(key, value)
            position = members.position(seq)
            if position is None:
                self.report(9, key, f"there is no ledger entry {seq}")
                continue
            entry_member = members.values[position]
            if entry_member == UNKNOWN:
                continue
            if member_id != entry_member and self.entry_payers.get(seq) == member_id:
                payers_seen.add(seq)
                continue
            if entry_member != member_id:
                named = f"member {entry_member}" if entry_member else "no member"
                self.report(9, key, f"ledger entry {seq} names {named}")
                continue
            seen[position] = 1
            matched += 1
        for seq, payer in self.entry_payers.items():
            if seq not in payers_seen:
                message = f"entry paid by member {payer} is missing from their member_ledger"
                self.report(9, f"ledger:{seq}", message)
        if matched == self.entries_with_member:
            return  # every entry with a member was found under it: no need to look
        for position, member_id in enumerate(members.values):
            if member_id not in (0, UNKNOWN) and not seen[position]:
                message = f"entry of member {member_id} is missing from member_ledger"
                self.report(9, f"ledger:{members.seq_at(position)}", message)

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
            held = name.startswith(HELD_PREFIXES) and not MEMBER_ACCOUNT.fullmatch(name)
            negative = record.balance < 0 and held
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
        owner = self.missing_owner(name)
        if owner is not None:
            self.report(0, key, f"account of {owner}, which does not exist")

    def missing_owner(self, name: str) -> str | None:
        """The card or member an account is named after, if it does not exist. (Lot
        accounts are checked with the lots.)"""
        if name.startswith("card/"):
            match = CARD_ACCOUNT.fullmatch(name)
            if match is not None and int(match.group(1)) not in self.card_members:
                return f"card {match.group(1)}"
        elif name.startswith("member/"):
            match = MEMBER_ACCOUNT.fullmatch(name)
            if match is not None and int(match.group(1)) not in self.member_phone_hashes:
                return f"member {match.group(1)}"
        return None

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
        raw = self.get("ledger", _u64(seq))
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


def _settlement_problems(settlement: Any) -> list[str]:
    """What breaks invariant 16 inside one settlement: its lines, payments and refunds."""
    problems = []
    payment_count = len(settlement.payments)
    by_payment = [0] * payment_count
    refunded_fen = 0
    for line in settlement.lines:
        steps = (line.member_discount_fen, line.coupon_fen, line.points_fen, line.rounding_fen)
        name = f"line {line.line_no}"
        if min(line.list_fen, line.due_fen, *steps) < 0:
            problems.append(f"{name} has a negative amount")
        if line.list_fen - sum(steps) != line.due_fen:
            problems.append(f"{name}: list less its steps is not its due {line.due_fen}")
        if sum(share.amount_fen for share in line.payments) != line.due_fen:
            problems.append(f"{name}: its payments do not add up to its due")
        if not 0 <= line.refunded_quantity_milli <= line.quantity_milli:
            problems.append(f"{name}: refunded quantity beyond its quantity")
        if not 0 <= line.refunded_fen <= line.due_fen:
            problems.append(f"{name}: refunded {line.refunded_fen} fen of {line.due_fen}")
        for share in line.payments:
            if share.payment_index >= payment_count:
                problems.append(f"{name}: a share of payment {share.payment_index}, not one")
                continue
            by_payment[share.payment_index] += share.amount_fen
            refunded_fen += share.refunded_fen
            if not 0 <= share.refunded_fen <= share.amount_fen:
                problems.append(f"{name}: a payment refunded beyond what it paid")
            if not 0 <= share.refunded_principal_fen <= share.principal_fen:
                problems.append(f"{name}: principal refunded beyond what it paid")
    for index, payment in enumerate(settlement.payments):
        if by_payment[index] != payment.amount_fen:
            problems.append(f"payment {index}: its shares over the lines are {by_payment[index]}")
    due = sum(line.due_fen + line.points_fen for line in settlement.lines)
    if due != settlement.due_fen:
        problems.append(f"due_fen {settlement.due_fen}, its lines say {due}")
    if refunded_fen != settlement.refunded_fen:
        problems.append(f"refunded_fen {settlement.refunded_fen}, its lines say {refunded_fen}")
    return problems


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


def _batch_problems(
    batch: records_pb2.PointsBatch, member_id: int, batch_id: int, counter: int | None
) -> list[str]:
    """What breaks invariant 18 in one batch, on its own."""
    problems = []
    if batch.member_id != member_id or batch.batch_id != batch_id:
        problems.append(f"record says member {batch.member_id}, batch {batch.batch_id}")
    if counter is not None and not 0 < batch_id <= counter:
        problems.append(f"batch id {batch_id} outside 1..{counter} (counter points_batch_id)")
    if not 0 < batch.points_left <= batch.points_earned:
        problems.append(f"points_left {batch.points_left} of {batch.points_earned} earned")
    if batch.source not in POINTS_SOURCES:
        problems.append(f"source {batch.source} is not one records.proto lists")
    earned_on = _parse_date(batch.earned_on) if batch.earned_on else None
    expires_on = _parse_date(batch.expires_on) if batch.expires_on else None
    if (batch.earned_on and earned_on is None) or (batch.expires_on and expires_on is None):
        problems.append(f"earned_on {batch.earned_on!r} or expires_on {batch.expires_on!r}")
    if earned_on and expires_on and expires_on < earned_on:
        problems.append(f"expires on {batch.expires_on}, before it was earned")
    return problems


def _expected_unit(account: str) -> int | None:
    """The unit docs/STORAGE.md gives the account name; None if the table lacks it."""
    if CARD_ACCOUNT.fullmatch(account) or STORE_ACCOUNT.fullmatch(account):
        return FEN
    if CLEARING_ACCOUNT.fullmatch(account) or STAFF_ACCOUNT.fullmatch(account):
        return FEN
    if MEMBER_ACCOUNT.fullmatch(account):
        return POINTS
    match = LOT_ACCOUNT.fullmatch(account)
    if match is not None:
        return FEN if match.group(2) else USES
    return MERCHANT_ACCOUNT_UNITS.get(account)


def _parse_date(text: str) -> datetime.date | None:
    """A YYYY-MM-DD local date, or None."""
    if not DATE.fullmatch(text):
        return None
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        return None


def _period_last_day(start: datetime.date, months: int) -> datetime.date | None:
    """The last day of `months` months from `start` (docs/STORAGE.md, invariant 13): the
    day before the same date `months` later, or that month's last day when it has none."""
    year, month_index = divmod(start.year * 12 + start.month - 1 + months, 12)
    if not datetime.MINYEAR <= year <= datetime.MAXYEAR:
        return None
    month = month_index + 1
    days_in_month = calendar.monthrange(year, month)[1]
    if start.day > days_in_month:
        return datetime.date(year, month, days_in_month)
    return datetime.date(year, month, start.day) - datetime.timedelta(days=1)


def _card_date_problems(card: card_pb2.Card) -> list[str]:
    """Invariant 14: the card's dates are dates, and a timed card's periods (start and
    months, both set or neither) end on its expires_on."""
    problems = [
        f"{name} {_printable(text)!r} is not a date"
        for name, text in (
            ("expires_on", card.expires_on),
            ("annual_fee_paid_until", card.annual_fee_paid_until),
            ("period_start_on", card.period_start_on),
        )
        if text and _parse_date(text) is None
    ]
    if problems:
        return problems
    if bool(card.period_start_on) != (card.period_months > 0) or card.period_months < 0:
        return [
            f"period_start_on {card.period_start_on!r} and period_months {card.period_months}"
            " must be both set or neither"
        ]
    if not card.period_start_on:
        return []
    start = _parse_date(card.period_start_on)
    assert start is not None
    last_day = _period_last_day(start, card.period_months)
    if last_day is None or last_day.isoformat() != card.expires_on:
        through = last_day.isoformat() if last_day else "out of range"
        return [
            f"{card.period_months} months from {card.period_start_on} run through {through},"
            f" expires_on is {card.expires_on!r}"
        ]
    return []


def _lot_value_left_fen(lot: card_pb2.CountLot) -> int:
    """What a lot's value account holds after `used` of its `total` uses: the price
    less floor(price × used / total), as docs/STORAGE.md says."""
    used = sum(item.uses_total - item.uses_left for item in lot.items)
    if lot.uses_total <= 0:
        return lot.price_fen
    return lot.price_fen - lot.price_fen * used // lot.uses_total


def _first_and_count(keys: Iterator[bytes]) -> tuple[bytes, int]:
    first, count = b"", 0
    for key in keys:
        if not count:
            first = key
        count += 1
    return first, count


def _records(count: int) -> str:
    return f"{count} record{'' if count == 1 else 's'}"


def _member_state_text(rest: bytes) -> str:
    """A member_state key as problems show it: member id/kind/its own part."""
    if len(rest) < MEMBER_STATE_HEAD_BYTES:
        return f"member_state:{_printable(rest)}"
    member_id, kind = int.from_bytes(rest[:U64_BYTES], "big"), rest[U64_BYTES]
    tail = rest[MEMBER_STATE_HEAD_BYTES:]
    shown = f"member_state:{member_id}/{KIND_NAMES.get(kind, f'kind {kind}')}"
    if len(tail) == U64_BYTES and kind != KIND_ACCOUNT:
        return f"{shown}/{int.from_bytes(tail, 'big')}"
    return f"{shown}/{_printable(tail)}" if tail else shown


def _old_key_text(database: str, rest: bytes) -> str:
    """A key of the older layout as problems show it: an account's name, or its u64s."""
    if database == "accounts" or not rest or len(rest) % U64_BYTES:
        return f"{database}:{_printable(rest)}"
    numbers = (int.from_bytes(rest[i : i + U64_BYTES], "big") for i in range(0, len(rest), 8))
    return f"{database}:" + "/".join(str(number) for number in numbers)


def _gap_message(what: str, previous: int, current: int) -> str:
    if current <= previous:
        return f"{what} {current} follows {previous}"
    return f"{what} {current} follows {previous}: {previous + 1}..{current - 1} missing"


_FULL_WIDTH_ASCII = range(0xFF01, 0xFF5F)  # U+FF01..U+FF5E are U+0021..U+007E
_FULL_WIDTH_OFFSET = 0xFEE0
_IDEOGRAPHIC_SPACE = "\u3000"


def search_key(name: str) -> str:
    """A name as the `names` index keys it (docs/STORAGE.md): full-width ASCII and the
    ideographic space made half-width, then ASCII letters (only those) made lower case."""
    return "".join(_fold_for_search(char) for char in name)


def _fold_for_search(char: str) -> str:
    if ord(char) in _FULL_WIDTH_ASCII:
        char = chr(ord(char) - _FULL_WIDTH_OFFSET)
    elif char == _IDEOGRAPHIC_SPACE:
        char = " "
    return char.lower() if "A" <= char <= "Z" else char


def _text_hash(text: str) -> int:
    # Python's string hash is salted per process, which is fine: both sides of every
    # comparison are hashed in this process.
    return hash(text) & HASH_MASK


def _unit_name(unit: int) -> str:
    return UNIT_NAMES.get(unit, f"unit {unit}")


def _u64(number: int) -> bytes:
    return number.to_bytes(U64_BYTES, "big")


def _u64_text(value: bytes, what: str) -> str:
    if len(value) != U64_BYTES:
        return f"a {len(value)}-byte value"
    return f"{what} {int.from_bytes(value, 'big')}"


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
