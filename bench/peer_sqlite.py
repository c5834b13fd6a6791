"""The peer a chain would otherwise build: the engine's member checkout on SQLite.

What it does, exactly:

- Storage: one SQLite database file (stdlib `sqlite3`), `journal_mode=WAL`,
  `synchronous=FULL` (the WAL is fsynced at every commit, so an answered checkout is
  durable, like the engine's default mode). One connection per thread (only its thread
  uses it; `check_same_thread` is off only so that the main thread may close it after
  the workers are done), opened in autocommit mode so the transaction is ours to begin.
- Tables: `members` (id, phone UNIQUE, cumulative spend), `accounts` (name PRIMARY KEY,
  balance), `ledger_entries` (seq INTEGER PRIMARY KEY), `postings` (entry seq, account,
  amount, unit), `requests` (request_id PRIMARY KEY, the first answer).
- One checkout (`SqlitePeer.checkout`) is one `BEGIN IMMEDIATE ... COMMIT` transaction:
  1. look up `request_id` in `requests`; if present, return the stored answer (a retry);
  2. look up the member by phone;
  3. read the member's principal balance and check it covers the amount (else roll back
     and raise `InsufficientBalance`);
  4. insert one ledger entry and four postings that sum to zero per unit: store sales
     `+amount`, member principal `-amount` (fen), member points `+points`, merchant
     points issued `-points` (1 point per yuan, as the engine's demo level);
  5. apply each posting to its account balance (`INSERT ... ON CONFLICT DO UPDATE`);
  6. add the amount to the member's cumulative spend;
  7. insert the idempotency row (request id and the answer);
  8. `COMMIT` (one WAL fsync).
- Busy: `BEGIN IMMEDIATE` takes SQLite's write lock up front (so a transaction never
  fails half-way on a lock upgrade). If another connection holds it, SQLite's busy
  handler waits (`busy_timeout`, `BUSY_TIMEOUT_MS`), and on a remaining
  `database is locked` the whole transaction is retried, at most `BUSY_RETRIES_MAX`
  times.

Variant: with a `write_lock` (one `threading.Lock` shared by the process's threads), a
thread takes the lock around its whole transaction, so writers queue in the process
instead of in SQLite's busy handler, whose sleeps (1, 2, 5, 10 ... ms) waste most of
the time under contention. That is the best a single process can do with SQLite; it does
not help several processes.

It is a fair, ordinary implementation, not a tuned one: prepared statements come from
the sqlite3 module's statement cache, and nothing is batched across requests (SQLite has
no group commit; each transaction is its own fsync).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

BUSY_TIMEOUT_MS = 5_000
BUSY_RETRIES_MAX = 100
BUSY_RETRY_SLEEP_S = 0.001
POINTS_PER_YUAN = 1
FEN_PER_YUAN = 100
STORE_SALES_ACCOUNT = "store/S001/sales"
POINTS_ISSUED_ACCOUNT = "merchant/points_issued"
UNIT_FEN = 1
UNIT_POINTS = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS members (
    id INTEGER PRIMARY KEY,
    phone TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    cumulative_spend_fen INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    balance INTEGER NOT NULL,
    posting_count INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_entries (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    request_id TEXT NOT NULL,
    member_id INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS postings (
    seq INTEGER NOT NULL,
    account TEXT NOT NULL,
    amount INTEGER NOT NULL,
    unit INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    answer TEXT NOT NULL
);
"""

_APPLY_POSTING = """
INSERT INTO accounts (name, balance, posting_count, last_seq) VALUES (?, ?, 1, ?)
ON CONFLICT (name) DO UPDATE SET
    balance = balance + excluded.balance,
    posting_count = posting_count + 1,
    last_seq = excluded.last_seq
"""


class InsufficientBalance(Exception):
    """The member's principal does not cover the checkout; nothing was written."""


class MemberNotFound(Exception):
    """No member has this phone; nothing was written."""


def principal_account(member_id: int) -> str:
    return f"member/{member_id}/principal"


def points_account(member_id: int) -> str:
    return f"member/{member_id}/points"


def connect(path: Path) -> sqlite3.Connection:
    """One connection, for one thread: WAL, synchronous=FULL, autocommit."""
    connection = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return connection


def create(path: Path, members: Iterable[tuple[str, int]]) -> None:
    """Creates the schema and the members (phone, principal recharged in fen), each with a
    balanced recharge entry, in one transaction (setup, not measured)."""
    connection = connect(path)
    try:
        connection.executescript(SCHEMA)
        connection.execute("BEGIN IMMEDIATE")
        for phone, principal_fen in members:
            member_id = connection.execute(
                "INSERT INTO members (phone, name) VALUES (?, ?)", (phone, "member")
            ).lastrowid
            seq = connection.execute(
                "INSERT INTO ledger_entries (at_ms, kind, request_id, member_id, amount_fen)"
                " VALUES (?, 'RECHARGE', ?, ?, ?)",
                (_now_ms(), f"setup-{member_id}", member_id, principal_fen),
            ).lastrowid
            postings = [
                (principal_account(member_id), principal_fen, UNIT_FEN),
                ("store/S001/cash", -principal_fen, UNIT_FEN),
            ]
            _post(connection, seq, postings)
        connection.execute("COMMIT")
    finally:
        connection.close()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _post(connection: sqlite3.Connection, seq: int, postings: list[tuple[str, int, int]]) -> None:
    for unit in (UNIT_FEN, UNIT_POINTS):
        assert sum(amount for _, amount, u in postings if u == unit) == 0, postings
    connection.executemany(
        "INSERT INTO postings (seq, account, amount, unit) VALUES (?, ?, ?, ?)",
        [(seq, account, amount, unit) for account, amount, unit in postings],
    )
    connection.executemany(
        _APPLY_POSTING, [(account, amount, seq) for account, amount, _ in postings]
    )


class SqlitePeer:
    """One thread's handle on the peer database."""

    def __init__(self, path: Path, write_lock: threading.Lock | None = None) -> None:
        self.connection = connect(path)
        self.busy_retries = 0
        self.write_lock = write_lock

    def close(self) -> None:
        self.connection.close()

    def checkout(self, request_id: str, phone: str, amount_fen: int) -> str:
        """Pays `amount_fen` from the member's principal; returns the answer text."""
        for _ in range(BUSY_RETRIES_MAX):
            try:
                with self.write_lock or contextlib.nullcontext():
                    return self._checkout_once(request_id, phone, amount_fen)
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    raise
                self.busy_retries += 1
                time.sleep(BUSY_RETRY_SLEEP_S)
        raise RuntimeError(f"database stayed locked for {BUSY_RETRIES_MAX} retries")

    def _checkout_once(self, request_id: str, phone: str, amount_fen: int) -> str:
        connection = self.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            answer = self._checkout_in_transaction(request_id, phone, amount_fen)
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return answer

    def _checkout_in_transaction(self, request_id: str, phone: str, amount_fen: int) -> str:
        connection = self.connection
        first = connection.execute(
            "SELECT answer FROM requests WHERE request_id = ?", (request_id,)
        ).fetchone()
        if first is not None:
            return first[0]
        row = connection.execute(
            "SELECT id, cumulative_spend_fen FROM members WHERE phone = ?", (phone,)
        ).fetchone()
        if row is None:
            raise MemberNotFound(phone)
        member_id, spend_fen = row
        principal = principal_account(member_id)
        balance_row = connection.execute(
            "SELECT balance FROM accounts WHERE name = ?", (principal,)
        ).fetchone()
        principal_fen = balance_row[0] if balance_row else 0
        if principal_fen < amount_fen:
            raise InsufficientBalance(f"{principal_fen} fen < {amount_fen} fen")
        points = amount_fen * POINTS_PER_YUAN // FEN_PER_YUAN
        now_ms = _now_ms()
        seq = connection.execute(
            "INSERT INTO ledger_entries (at_ms, kind, request_id, member_id, amount_fen)"
            " VALUES (?, 'CHECKOUT', ?, ?, ?)",
            (now_ms, request_id, member_id, amount_fen),
        ).lastrowid
        postings = [
            (STORE_SALES_ACCOUNT, amount_fen, UNIT_FEN),
            (principal, -amount_fen, UNIT_FEN),
            (points_account(member_id), points, UNIT_POINTS),
            (POINTS_ISSUED_ACCOUNT, -points, UNIT_POINTS),
        ]
        _post(connection, seq, postings)
        connection.execute(
            "UPDATE members SET cumulative_spend_fen = ? WHERE id = ?",
            (spend_fen + amount_fen, member_id),
        )
        answer = f"{member_id},{principal_fen - amount_fen},{seq},{now_ms}"
        connection.execute(
            "INSERT INTO requests (request_id, answer) VALUES (?, ?)", (request_id, answer)
        )
        return answer


def verify(path: Path) -> dict[str, int]:
    """Checks the books: postings sum to zero per unit, every account equals the sum of
    its postings. Returns the counts of checkouts and postings."""
    connection = connect(path)
    try:
        for unit, total in connection.execute(
            "SELECT unit, SUM(amount) FROM postings GROUP BY unit"
        ):
            assert total == 0, f"postings of unit {unit} sum to {total}"
        mismatched = connection.execute(
            "WITH sums AS (SELECT account, SUM(amount) AS total FROM postings GROUP BY account)"
            " SELECT COUNT(*) FROM accounts a LEFT JOIN sums s ON s.account = a.name"
            " WHERE s.total IS NULL OR s.total != a.balance"
        ).fetchone()[0]
        assert mismatched == 0, f"{mismatched} accounts differ from their postings"
        checkouts = connection.execute(
            "SELECT COUNT(*) FROM ledger_entries WHERE kind = 'CHECKOUT'"
        ).fetchone()[0]
        requests = connection.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        assert checkouts == requests
        return {"checkouts": checkouts, "requests": requests}
    finally:
        connection.close()
