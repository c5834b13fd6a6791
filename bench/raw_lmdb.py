"""The storage ceiling: raw LMDB (the Python `lmdb` package) writing what a settlement
writes, with no engine around it: no protobuf, no rules, no queue, one thread.

What one "settlement" is here, from `dataset.settlement_write_bytes` (measured on the
engine): `records` key/value writes of `bytes` in all, of which `inserted` are new keys
appended in order (ledger entry, settlement, request record, history index ...) and the
rest overwrite existing records at random among `members` keys (the member, card and
account records). Settlements are written `batch` to a write transaction, each commit
durable (sync, as the engine's durable mode), for `duration_s`.

Run as its own process (`python bench/raw_lmdb.py ...`): it prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import tempfile
import time

import lmdb

MAP_SIZE_BYTES = 64 * 2**30
# One populated key per member for the overwrites: as many as the engine's member records.
KEY_PREFIX = b"bench1m\x00"


def run(
    members: int, records: float, inserted: float, bytes_total: float, batch: int, duration_s: float
) -> dict[str, float]:
    updates = max(1, round(records - inserted))
    inserts = max(1, round(inserted))
    value_size = max(1, round(bytes_total / (updates + inserts)) - len(KEY_PREFIX) - 8)
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="mms-bench-raw-") as scratch:
        env = lmdb.open(scratch, map_size=MAP_SIZE_BYTES, max_dbs=4, sync=True, metasync=True)
        records_db = env.open_db(b"records")
        appends_db = env.open_db(b"appends")
        value = os.urandom(value_size)
        with env.begin(write=True, db=records_db) as txn:
            for index in range(members):
                txn.put(KEY_PREFIX + struct.pack(">Q", index), value, append=True)
        env.sync(True)
        settlements = 0
        sequence = 0
        began = time.perf_counter()
        deadline = began + duration_s
        while time.perf_counter() < deadline:
            with env.begin(write=True) as txn:
                for _ in range(batch):
                    for _ in range(updates):
                        key = KEY_PREFIX + struct.pack(">Q", rng.randrange(members))
                        txn.put(key, value, db=records_db)
                    for _ in range(inserts):
                        sequence += 1
                        key = KEY_PREFIX + struct.pack(">Q", sequence)
                        txn.put(key, value, db=appends_db, append=True)
            settlements += batch
        elapsed_s = time.perf_counter() - began
        env.close()
    return {
        "per_s": round(settlements / elapsed_s, 1),
        "settlements": settlements,
        "elapsed_s": round(elapsed_s, 3),
        "batch": batch,
        "writes_per_settlement": updates + inserts,
        "value_bytes": value_size,
        "members": members,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, required=True)
    parser.add_argument("--records", type=float, required=True)
    parser.add_argument("--inserted", type=float, required=True)
    parser.add_argument("--bytes", type=float, required=True, dest="bytes_total")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--duration-s", type=float, required=True)
    args = parser.parse_args()
    result = run(
        args.members, args.records, args.inserted, args.bytes_total, args.batch, args.duration_s
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
