"""The PostgreSQL peer: the same quick checkout as a PL/pgSQL function, `settle`, on a
PostgreSQL 15 the suite starts itself (initdb in a temp dir, a free loopback port,
`synchronous_commit = on`, `fsync = on`: an answered settle is durable like the engine's).

What `settle(request_id, phone, list_amount_fen, store_code)` does, in one transaction:

1. the idempotency row: a request id seen before returns its first answer;
2. the member by phone, locked (`FOR UPDATE`), and their level;
3. the level's discount (basis points, rounded down) gives the amount due;
4. the balance check: principal + bonus must cover it (else `INSUFFICIENT_BALANCE`,
   nothing written); principal is spent first, then bonus;
5. points earned: the level's thousandths of a point per yuan of the amount due;
6. the level upgrade: the highest level whose cumulative-spend threshold the new
   cumulative spend reaches;
7. the member row updated (principal, bonus, points, cumulative spend, level);
8. one ledger entry and five postings summing to zero per unit (store sales, member
   principal, member bonus, member points, merchant points issued);
9. the idempotency row with the answer (JSON).

Favours the peer: the store's and merchant's side of a settle are postings only, with no
balance row updated in place (one hot row would serialize every settle behind its lock
for a whole commit); balances live on the member row, not one row per account.

`pgbench` runs it (`-M prepared`, a random member, a random amount of the four, a unique
request id per transaction), and `peer_pg_server.py` calls it from a Python gRPC server.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin",)
DATABASE = "bench"
START_TIMEOUT_S = 60.0
PGBENCH_THREADS_MAX = 4
# pgbench runs whole seconds; opening 256 connections on a busy machine can take one.
PGBENCH_SECONDS_MIN = 3
MAX_CONNECTIONS = 400

SCHEMA = """
CREATE TABLE levels (
    code text PRIMARY KEY,
    rank int NOT NULL UNIQUE,
    discount_bp int NOT NULL,
    milli_points_per_yuan bigint NOT NULL,
    upgrade_cumulative_spend_fen bigint NOT NULL
);
CREATE TABLE members (
    id bigint PRIMARY KEY,
    phone text NOT NULL UNIQUE,
    name text NOT NULL,
    level_code text NOT NULL REFERENCES levels,
    cumulative_spend_fen bigint NOT NULL DEFAULT 0,
    principal_fen bigint NOT NULL CHECK (principal_fen >= 0),
    bonus_fen bigint NOT NULL CHECK (bonus_fen >= 0),
    points bigint NOT NULL DEFAULT 0
);
CREATE TABLE ledger_entries (
    seq bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    kind text NOT NULL,
    request_id text NOT NULL,
    member_id bigint NOT NULL,
    store_code text NOT NULL,
    amount_fen bigint NOT NULL
);
CREATE TABLE postings (
    seq bigint NOT NULL REFERENCES ledger_entries,
    account text NOT NULL,
    amount bigint NOT NULL,
    unit smallint NOT NULL
);
CREATE INDEX postings_seq ON postings (seq);
CREATE TABLE requests (
    request_id text PRIMARY KEY,
    answer jsonb NOT NULL
);

CREATE FUNCTION settle(p_request_id text, p_phone text, p_list_amount_fen bigint, p_store text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_answer jsonb;
    m members%ROWTYPE;
    lv levels%ROWTYPE;
    v_due bigint;
    v_from_principal bigint;
    v_from_bonus bigint;
    v_points bigint;
    v_spend bigint;
    v_level text;
    v_seq bigint;
BEGIN
    SELECT answer INTO v_answer FROM requests WHERE request_id = p_request_id;
    IF FOUND THEN
        RETURN v_answer || '{"replayed": true}';
    END IF;
    SELECT * INTO m FROM members WHERE phone = p_phone FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'MEMBER_NOT_FOUND' USING ERRCODE = 'P0002';
    END IF;
    SELECT * INTO lv FROM levels WHERE code = m.level_code;
    v_due := p_list_amount_fen - p_list_amount_fen * lv.discount_bp / 10000;
    IF m.principal_fen + m.bonus_fen < v_due THEN
        RAISE EXCEPTION 'INSUFFICIENT_BALANCE' USING ERRCODE = 'P0001';
    END IF;
    v_from_principal := least(m.principal_fen, v_due);
    v_from_bonus := v_due - v_from_principal;
    v_points := v_due * lv.milli_points_per_yuan / 100000;
    v_spend := m.cumulative_spend_fen + v_due;
    SELECT code INTO v_level FROM levels
        WHERE rank > lv.rank AND upgrade_cumulative_spend_fen > 0
          AND upgrade_cumulative_spend_fen <= v_spend
        ORDER BY rank DESC LIMIT 1;
    v_level := coalesce(v_level, m.level_code);
    UPDATE members SET
        principal_fen = principal_fen - v_from_principal,
        bonus_fen = bonus_fen - v_from_bonus,
        points = points + v_points,
        cumulative_spend_fen = v_spend,
        level_code = v_level
    WHERE id = m.id;
    INSERT INTO ledger_entries (kind, request_id, member_id, store_code, amount_fen)
        VALUES ('CHECKOUT', p_request_id, m.id, p_store, v_due)
        RETURNING seq INTO v_seq;
    INSERT INTO postings (seq, account, amount, unit) VALUES
        (v_seq, 'store/' || p_store || '/sales', v_due, 1),
        (v_seq, 'member/' || m.id || '/principal', -v_from_principal, 1),
        (v_seq, 'member/' || m.id || '/bonus', -v_from_bonus, 1),
        (v_seq, 'member/' || m.id || '/points', v_points, 2),
        (v_seq, 'merchant/points_issued', -v_points, 2);
    v_answer := jsonb_build_object(
        'member_id', m.id, 'list_amount_fen', p_list_amount_fen,
        'discount_bp', lv.discount_bp, 'amount_due_fen', v_due,
        'principal_fen', m.principal_fen - v_from_principal,
        'bonus_fen', m.bonus_fen - v_from_bonus,
        'points', m.points + v_points, 'points_earned', v_points,
        'from_principal', v_from_principal, 'from_bonus', v_from_bonus,
        'level_before', m.level_code, 'level_after', v_level,
        'ledger_seq', v_seq, 'store_code', p_store);
    INSERT INTO requests (request_id, answer) VALUES (p_request_id, v_answer);
    RETURN v_answer;
END $$;
"""

PGBENCH_SCRIPT = """\\set m random(0, :members - 1)
\\set r random(1, 9000000000000000000)
\\set a random(1, 4)
SELECT settle('pgb-' || :client_id || '-' || :r, (13000000000 + :m)::text, (ARRAY[1280, 3500, 850, 6600])[:a], 'S001');
"""


def _bin(name: str) -> str:
    for directory in PG_BIN_DIRS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name}: install PostgreSQL 15 (make bench-setup)")
    return found


def _as_postgres(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Postgres:
    """A PostgreSQL started by the suite; stop() removes its folder."""

    root: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={DATABASE} user=postgres"

    def psql(self, sql: str) -> str:
        done = subprocess.run(
            [_bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", DATABASE],
            input=sql, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout.strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: smart shutdown
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def start(scratch: str | None = None) -> Postgres:
    root = tempfile.mkdtemp(prefix="mms-bench-pg-", dir=scratch)
    os.chmod(root, 0o755)
    data = os.path.join(root, "data")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        _as_postgres([_bin("initdb"), "-D", data, "-U", "postgres", "--auth=trust",
                      "--encoding=UTF8", "--no-locale"]),
        check=True, capture_output=True,
    )  # fmt: skip
    port = _free_port()
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": f"'{root}'",
        "max_connections": str(MAX_CONNECTIONS),
        "shared_buffers": "'512MB'",
        "synchronous_commit": "on",
        "fsync": "on",
        "full_page_writes": "on",
        "wal_level": "minimal",
        "max_wal_senders": "0",
        "max_wal_size": "'4GB'",
        "checkpoint_timeout": "'30min'",
        "logging_collector": "off",
    }
    with open(os.path.join(data, "postgresql.conf"), "a") as conf:
        for key, value in settings.items():
            conf.write(f"{key} = {value}\n")
    process = subprocess.Popen(
        _as_postgres([_bin("postgres"), "-D", data]),
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(root, "server.log"), "wb"),  # noqa: SIM115
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while subprocess.run(
        [_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], check=False
    ).returncode:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("postgres did not start: " + _tail(root))
        time.sleep(0.1)
    subprocess.run(
        [_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE],
        check=True,
    )
    return Postgres(root=root, port=port, process=process)


def _tail(root: str) -> str:
    try:
        return Path(root, "server.log").read_text()[-2000:]
    except OSError:
        return ""


def load(pg: Postgres, members: int) -> float:
    """Schema, the four levels of the engine's config, and `members` members with the same
    opening balance as the engine's (principal and its recharge bonus)."""
    began = time.perf_counter()
    config = common.merchant_config()
    bonus_fen = max(
        rule.bonus_fen
        for rule in config.recharge_bonus_rules
        if rule.min_recharge_fen <= common.OPENING_RECHARGE_FEN
    )
    levels = ",".join(
        f"('{level.code}', {rank}, {level.discount_bp}, {level.milli_points_per_yuan},"
        f" {level.upgrade_cumulative_spend_fen})"
        for rank, level in enumerate(config.levels)
    )
    pg.psql(
        SCHEMA
        + f"INSERT INTO levels VALUES {levels};\n"
        + "INSERT INTO members (id, phone, name, level_code, principal_fen, bonus_fen)"
        + f" SELECT i + 1, ({common.PHONE_FIRST} + i)::text, 'member ' || i, 'regular',"
        + f" {common.OPENING_RECHARGE_FEN}, {bonus_fen} FROM generate_series(0, {members - 1}) AS i;\n"
        + "VACUUM ANALYZE;\nCHECKPOINT;\n"
    )
    return time.perf_counter() - began


def settled_count(pg: Postgres) -> int:
    return int(pg.psql("SELECT count(*) FROM ledger_entries"))


def check_books(pg: Postgres) -> dict[str, Any]:
    """Postings sum to zero per unit; each member's balance moved by their postings."""
    problems = pg.psql(
        "SELECT count(*) FROM (SELECT unit, sum(amount) s FROM postings GROUP BY unit) t"
        " WHERE s <> 0"
    )
    assert problems == "0", "postings do not sum to zero"
    entries = settled_count(pg)
    requests = int(pg.psql("SELECT count(*) FROM requests"))
    assert entries == requests, (entries, requests)
    return {"ledger_entries": entries, "requests": requests}


_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")
_PROCESSED = re.compile(r"number of transactions actually processed: (\d+)")
_FAILED = re.compile(r"number of failed transactions: (\d+)")


def pgbench(pg: Postgres, members: int, clients: int, duration_s: float) -> dict[str, Any]:
    """pgbench with the settle script at `clients` connections for `duration_s`; latency
    percentiles from its per-transaction log. Guard: the ledger grew by exactly the
    transactions pgbench counted."""
    work = tempfile.mkdtemp(prefix="mms-pgbench-")
    try:
        script = os.path.join(work, "settle.sql")
        Path(script).write_text(PGBENCH_SCRIPT)
        before = settled_count(pg)
        threads = max(1, min(PGBENCH_THREADS_MAX, clients))
        done = subprocess.run(
            [_bin("pgbench"), "-n", "-M", "prepared", "-c", str(clients), "-j", str(threads),
             "-T", str(max(PGBENCH_SECONDS_MIN, round(duration_s))), "-D", f"members={members}",
             "-f", script, "-l", "--log-prefix", os.path.join(work, "log"),
             "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", DATABASE],
            capture_output=True, text=True, check=False, cwd=work,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"pgbench failed: {done.stdout}\n{done.stderr}")
        tps_match, processed_match = _TPS.search(done.stdout), _PROCESSED.search(done.stdout)
        if not (tps_match and processed_match):
            raise RuntimeError(f"pgbench printed no throughput:\n{done.stdout}\n{done.stderr}")
        tps, processed = float(tps_match.group(1)), int(processed_match.group(1))
        failed_match = _FAILED.search(done.stdout)
        failed = int(failed_match.group(1)) if failed_match else 0
        latencies_s = []
        for name in os.listdir(work):
            if name.startswith("log"):
                with open(os.path.join(work, name)) as log:
                    latencies_s.extend(int(line.split()[2]) / 1e6 for line in log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    after = settled_count(pg)
    assert failed == 0, done.stdout
    assert after - before == processed == len(latencies_s), (after - before, processed)
    return {
        "concurrency": clients,
        "ok": processed,
        "per_s": round(tps, 1),
        **common.latency_summary_ms(latencies_s),
    }
