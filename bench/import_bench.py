"""Bulk member import (会员批量导入) over gRPC, against the row-at-a-time peer.

    .venv/bin/python bench/import_bench.py --spawn
    .venv/bin/python bench/import_bench.py --spawn --rows 100000 --peer-rows 10000

Writes a CSV of `--rows` members (phone, name, gender, birthday, tags, as a chain's
export has them), then, on one durable server and in one run:

- **import**: `engine.importer.import_members`, exactly what `mms member import FILE`
  runs: the file is parsed and checked, then sent in chunks of 1000 rows through
  `MemberService.ImportMembers`, 4 chunks in flight;
- **peer**: what an importer without a bulk call does: one `RegisterMember` per row,
  from `--peer-concurrency` threads (64 by default), for the first `--peer-rows` rows of
  another file, under another merchant.

Each side gets its own merchant, so both start from an empty member table, and acts as
that merchant's head office admin (a staff token in every call's `authorization`). With
--spawn both merchants (`import-<run id>`, `peer-<run id>`) get their admin from `mms auth
bootstrap` on the temp data folder; with --server the tokens come from $MMS_TOKEN (import
side) and $MMS_PEER_TOKEN (peer side): admins of two merchants with no members yet. It
prints rows/s of each and the ratio. Guards: every row of each side must be registered (the
import's summary, the peer's answers), and a few members of each are read back.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import grpc  # noqa: E402
from loadgen import (  # noqa: E402
    CONFIG_METHOD,
    REGISTER_METHOD,
    _bounded_int,
    bootstrap_admin,
    call_metadata,
    load_config,
    spawn_server,
    token_from_environment,
)

from engine.importer import import_members  # noqa: E402
from engine.proto import common_pb2, config_pb2, member_pb2, member_pb2_grpc  # noqa: E402

ROWS_MAX = 1_000_000
CONCURRENCY_MAX = 1024
CALL_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 60.0
FIRST_PHONE = 13_000_000_000
READ_BACK = (0, 1, 4_321)
PEER_TOKEN_ENVIRONMENT_VARIABLE = "MMS_PEER_TOKEN"


def write_members_csv(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8-sig", newline="") as file:  # with a BOM, as Excel
        writer = csv.writer(file)
        writer.writerow(["手机号", "姓名", "性别", "生日", "标签"])
        for index in range(rows):
            gender = "女" if index % 2 else "男"
            birthday = f"19{70 + index % 30}-{1 + index % 12:02d}-{1 + index % 28:02d}"
            writer.writerow([FIRST_PHONE + index, f"会员{index}", gender, birthday, "导入"])


def apply_config(channel: grpc.Channel, token: str, run_id: str) -> None:
    apply = channel.unary_unary(CONFIG_METHOD)
    request = config_pb2.ApplyConfigRequest(request_id=f"{run_id}-config", config=load_config())
    apply(request.SerializeToString(), timeout=CALL_TIMEOUT_S, metadata=call_metadata(token))


def read_back(channel: grpc.Channel, token: str, rows: int) -> None:
    stub = member_pb2_grpc.MemberServiceStub(channel)
    for index in READ_BACK:
        if index >= rows:
            continue
        found = stub.GetMember(
            member_pb2.GetMemberRequest(
                member=common_pb2.MemberRef(phone=str(FIRST_PHONE + index))
            ),
            timeout=CALL_TIMEOUT_S,
            metadata=call_metadata(token),
        )
        assert found.member.name == f"会员{index}", found.member


def run_import(channel: grpc.Channel, token: str, run_id: str, path: Path, rows: int) -> float:
    apply_config(channel, token, f"import-{run_id}")
    stub = member_pb2_grpc.MemberServiceStub(channel)
    began = time.perf_counter()
    summary = import_members(
        stub,
        str(path),
        metadata=call_metadata(token),
        timeout_s=CALL_TIMEOUT_S,
        progress=None,
    )
    elapsed_s = time.perf_counter() - began
    assert (summary.rows, summary.imported, summary.failed) == (rows, rows, 0), summary
    read_back(channel, token, rows)
    return elapsed_s


def run_peer(channel: grpc.Channel, token: str, run_id: str, rows: int, concurrency: int) -> float:
    """One RegisterMember per row, the fields the import sends, from `concurrency` threads."""
    apply_config(channel, token, f"peer-{run_id}")
    register = channel.unary_unary(REGISTER_METHOD)
    metadata = call_metadata(token)
    requests = []
    for index in range(rows):
        gender = member_pb2.FEMALE if index % 2 else member_pb2.MALE
        birthday = f"19{70 + index % 30}-{1 + index % 12:02d}-{1 + index % 28:02d}"
        request = member_pb2.RegisterMemberRequest(
            request_id=f"peer-{run_id}-{index}",
            phone=str(FIRST_PHONE + index),
            name=f"会员{index}",
            profile=member_pb2.Profile(gender=gender, birthday=birthday, tags=["导入"]),
        )
        requests.append(request.SerializeToString())

    def share(worker_index: int) -> int:
        for request in requests[worker_index::concurrency]:
            register(request, timeout=CALL_TIMEOUT_S, metadata=metadata)
        return len(requests[worker_index::concurrency])

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="peer") as pool:
        registered = sum(pool.map(share, range(concurrency)))
    elapsed_s = time.perf_counter() - began
    assert registered == rows
    read_back(channel, token, rows)
    return elapsed_s


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--server", metavar="HOST:PORT", help="a running server")
    target.add_argument("--spawn", action="store_true", help="start a durable server on a temp dir")
    parser.add_argument("--rows", type=_bounded_int(ROWS_MAX), default=100_000)
    parser.add_argument("--peer-rows", type=_bounded_int(ROWS_MAX), default=10_000)
    parser.add_argument("--peer-concurrency", type=_bounded_int(CONCURRENCY_MAX), default=64)
    return parser.parse_args(argv)


def run(address: str, args: argparse.Namespace, tokens: tuple[str, str], run_id: str) -> None:
    """`tokens`: the admins of the import's merchant and of the peer's."""
    with tempfile.TemporaryDirectory(prefix="mms-import-bench-") as scratch:
        path = Path(scratch) / "members.csv"
        write_members_csv(path, args.rows)
        size_mib = os.path.getsize(path) / 2**20
        print(f"file: {args.rows:,} rows, {size_mib:.1f} MiB CSV", flush=True)
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=READY_TIMEOUT_S)
            import_s = run_import(channel, tokens[0], run_id, path, args.rows)
            import_rate = args.rows / import_s
            print(
                f"import (mms member import): {args.rows:,} rows in {import_s:.1f} s, {import_rate:,.0f} rows/s",
                flush=True,
            )
            peer_s = run_peer(channel, tokens[1], run_id, args.peer_rows, args.peer_concurrency)
            peer_rate = args.peer_rows / peer_s
            print(
                f"peer (RegisterMember per row, {args.peer_concurrency} threads): {args.peer_rows:,} rows in {peer_s:.1f} s, {peer_rate:,.0f} rows/s"
            )
            print(f"ratio: the import is {import_rate / peer_rate:.1f}x the peer's rows/s")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run_id = uuid.uuid4().hex[:12]
    if args.spawn:
        with spawn_server(no_sync=False) as spawned:
            print(f"spawned server pid {spawned.process.pid} (durable)", flush=True)
            tokens = (
                bootstrap_admin(spawned.data_dir, f"import-{run_id}"),
                bootstrap_admin(spawned.data_dir, f"peer-{run_id}"),
            )
            run(spawned.address, args, tokens, run_id)
        return 0
    peer_token = os.environ.get(PEER_TOKEN_ENVIRONMENT_VARIABLE, "").strip()
    if not peer_token:
        raise SystemExit(
            f"--server needs ${PEER_TOKEN_ENVIRONMENT_VARIABLE} too: the admin of another"
            " merchant with no members, for the peer side"
        )
    run(args.server, args, (token_from_environment(), peer_token), run_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
