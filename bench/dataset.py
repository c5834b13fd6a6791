"""The suite's data: one merchant (`common.merchant_config`: 4 levels, recharge bonus and
points rules) with N members (1,000,000 by default), each with a balance.

The fast path: the core is opened in-process in its no-sync mode (benchmarks only), the
config applied, members registered through `ImportMembers` in chunks of 1000 rows (the
call behind `mms member import`, several chunks in flight), then every member recharged
OPENING_RECHARGE_FEN (one Recharge each, from many threads; the recharge earns a bonus, so
every member has principal and bonus), the HOT_MEMBERS first ones much more. The core is
then closed, which flushes everything to the file: every later open (in-core runs, the
server) is durable, on this file. Everything is done as the merchant's head office admin,
bootstrapped first (`common.admin_actor`); its token is saved next to data.mdb
(`common.token_path`, mode 0600) for the in-core runs and the clients of the server.

`settlement_write_bytes` measures, on a small side database, how many records and bytes a
quick checkout writes (every key new or changed, key + value), which the raw LMDB
ceiling (`raw_lmdb.py`) writes in its place.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common
import lmdb

from engine._core import Core
from engine.proto import config_pb2, member_pb2

IMPORT_CHUNK_ROWS = 1000
IMPORT_IN_FLIGHT = 4
RECHARGE_THREADS = 32
LOAD_TIMEOUT_S = 3600.0


def apply_config(core: Core) -> None:
    request = config_pb2.ApplyConfigRequest(
        request_id="bench-config", config=common.merchant_config()
    )
    core.submit(common.CONFIG_METHOD, common.admin_actor(core), request.SerializeToString())


def _import_chunk(core: Core, first: int, rows: int) -> int:
    request = member_pb2.ImportMembersRequest(
        request_id=f"import-{first}",
        rows=[
            member_pb2.RegisterMemberRequest(phone=common.phone(index), name=f"会员{index}")
            for index in range(first, first + rows)
        ],
    )
    actor = common.admin_actor(core)
    answer, _ = core.submit(common.IMPORT_METHOD, actor, request.SerializeToString())
    response = member_pb2.ImportMembersResponse.FromString(answer)
    assert (response.imported, response.failed) == (rows, 0), response.results[:3]
    return rows


def _recharge_share(core: Core, indexes: Sequence[int], amount_fen: int, tag: str) -> int:
    submit, actor = core.submit, common.admin_actor(core)
    for index in indexes:
        request = common.encode_recharge(f"{tag}-{index}", common.phone(index), amount_fen)
        submit(common.RECHARGE_METHOD, actor, request)
    return len(indexes)


def _in_parallel(threads: int, work: Callable[[int], int], items: Sequence[int]) -> int:
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="load") as pool:
        futures = [pool.submit(work, item) for item in items]
        return sum(future.result(timeout=LOAD_TIMEOUT_S) for future in futures)


def load(core: Core, members: int) -> dict[str, float]:
    """Config, members, opening balances; returns the time each step took."""
    apply_config(core)
    began = time.perf_counter()
    firsts = list(range(0, members, IMPORT_CHUNK_ROWS))
    imported = _in_parallel(
        IMPORT_IN_FLIGHT,
        lambda first: _import_chunk(core, first, min(IMPORT_CHUNK_ROWS, members - first)),
        firsts,
    )
    assert imported == members
    import_s = time.perf_counter() - began
    began = time.perf_counter()
    shares = [range(start, members, RECHARGE_THREADS) for start in range(RECHARGE_THREADS)]
    recharged = _in_parallel(
        RECHARGE_THREADS,
        lambda start: _recharge_share(core, shares[start], common.OPENING_RECHARGE_FEN, "opening"),
        list(range(RECHARGE_THREADS)),
    )
    assert recharged == members
    hot = min(common.HOT_MEMBERS, members)
    _recharge_share(core, range(hot), common.HOT_RECHARGE_FEN, "hot")
    recharge_s = time.perf_counter() - began
    return {
        "import_s": round(import_s, 2),
        "import_rows_per_s": round(members / import_s),
        "recharge_s": round(recharge_s, 2),
        "recharges_per_s": round(members / recharge_s),
    }


def build(data_dir: Path, members: int) -> dict[str, object]:
    """Builds the data set in data_dir (no-sync, then closed); returns what it took and
    the footprint: file size and pages used, per member."""
    print(f"data: loading {members:,} members into {data_dir} (no-sync fast path)", flush=True)
    began = time.perf_counter()
    core = Core(str(data_dir), durable=False)
    try:
        timings = load(core, members)
        common.write_token(common.token_path(data_dir), common.admin_token(core))
        stats = core.stats()
    finally:
        core.close()
    total_s = time.perf_counter() - began
    file_bytes = os.path.getsize(data_dir / "data.mdb")
    result: dict[str, object] = {
        "members": members,
        "load_s": round(total_s, 2),
        **timings,
        "file_bytes": file_bytes,
        "used_bytes": stats["map_used_bytes"],
        "used_bytes_per_member": round(stats["map_used_bytes"] / members, 1),
        "file_bytes_per_member": round(file_bytes / members, 1),
    }
    result["bytes_per_member_by_database"] = _pages_by_database(data_dir, members)
    print(
        f"data: {members:,} members in {total_s:.1f} s (import {timings['import_rows_per_s']:,} rows/s,"
        f" recharge {timings['recharges_per_s']:,}/s); {result['used_bytes_per_member']} bytes"
        f" used per member ({file_bytes / 2**20:.0f} MiB file)",
        flush=True,
    )
    return result


def _pages_by_database(data_dir: Path, members: int) -> dict[str, float]:
    """Bytes of pages (branch, leaf, overflow) each named database holds, per member,
    read from the closed environment; the largest first."""
    env = lmdb.open(str(data_dir), readonly=True, lock=False, max_dbs=64)
    try:
        with env.begin() as txn:
            names = [key for key, _ in txn.cursor()]
        sizes = {}
        for name in names:
            with env.begin() as txn:
                info = txn.stat(env.open_db(name, txn=txn, create=False))
            pages = info["branch_pages"] + info["leaf_pages"] + info["overflow_pages"]
            sizes[name.decode()] = round(pages * info["psize"] / members, 1)
    finally:
        env.close()
    return dict(sorted(sizes.items(), key=lambda item: -item[1]))


# --- bytes one settlement writes ----------------------------------------------------------


def _contents(path: str) -> dict[tuple[bytes, bytes], bytes]:
    """Every (database, key) -> value of a closed environment or a backup."""
    found: dict[tuple[bytes, bytes], bytes] = {}
    env = lmdb.open(path, readonly=True, lock=False, max_dbs=64, subdir=True)
    try:
        with env.begin() as txn:
            names = [key for key, _ in txn.cursor()]
        for name in names:
            database = env.open_db(name, create=False)
            with env.begin(db=database) as txn:
                for key, value in txn.cursor():
                    found[(name, key)] = value
    finally:
        env.close()
    return found


def settlement_write_bytes(settlements: int = 200) -> dict[str, float]:
    """Records and bytes (key + value) that one quick checkout adds or changes, measured
    as the difference between two backups around `settlements` checkouts."""
    with tempfile.TemporaryDirectory(prefix="mms-bench-bytes-") as scratch:
        core = Core(os.path.join(scratch, "data"), durable=False)
        try:
            load(core, settlements)
            before, _ = core.backup(os.path.join(scratch, "before"))
            for index in range(settlements):
                amount = common.CHECKOUT_AMOUNTS_FEN[index % len(common.CHECKOUT_AMOUNTS_FEN)]
                core.submit(
                    common.CHECKOUT_METHOD,
                    common.admin_actor(core),
                    common.encode_checkout(f"bytes-{index}", common.phone(index), amount),
                )
            after, _ = core.backup(os.path.join(scratch, "after"))
        finally:
            core.close()
        old = _contents(os.path.dirname(before))
        new = _contents(os.path.dirname(after))
    changed = [(key, value) for key, value in new.items() if old.get(key) != value]
    inserted = sum(1 for key, _ in changed if key not in old)
    written = sum(len(key[1]) + len(value) for key, value in changed)
    return {
        "records_per_settlement": round(len(changed) / settlements, 2),
        "inserted_per_settlement": round(inserted / settlements, 2),
        "bytes_per_settlement": round(written / settlements, 1),
    }
