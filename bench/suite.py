"""The benchmark suite behind `make bench`: the engine against what a chain would build
instead, side by side, in one run, on one machine. See bench/README.md.

    .venv/bin/python bench/suite.py                       # the full run (1,000,000 members)
    .venv/bin/python bench/suite.py --members 20000 --duration-s 1 --quick

Parts, in order: the data set (1M members, fast path); in-core settle (durable, then
no-sync); raw LMDB (the storage ceiling); end-to-end over gRPC against `mms serve` (lookup,
checkout, recharge, mix, hot members) with footprint (RSS, startup); the empty method on
the engine's stack; PostgreSQL (pgbench on the PL/pgSQL settle, then the Python+PostgreSQL
gRPC server); the crash case. Then the ratios, a JSON file and PNG charts under
bench/results/. Targets are reported, never enforced: the suite fails only when a guard
finds that something it timed did not happen.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
import crash
import dataset
import incore
import mpload
import peer_pg

from engine.proto import member_pb2

RESULTS = common.BENCH / "results"
E2E_WORKLOADS = ("lookup", "checkout", "recharge", "mix")
STARTUP_LOOKUP_TIMEOUT_S = 60.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--duration-s", type=float, default=5.0, help="per measured point")
    parser.add_argument("--incore-concurrency", default="1,8,64,256")
    parser.add_argument("--e2e-concurrency", default="1,16,64,256")
    parser.add_argument("--pg-concurrency", default="1,8,64,256")
    parser.add_argument("--hot-concurrency", type=int, default=64)
    parser.add_argument("--crash-members", type=int, default=2000)
    parser.add_argument("--client-processes", type=int, default=mpload.PROCESSES_DEFAULT)
    parser.add_argument(
        "--quick", action="store_true", help="smallest run that exercises every part"
    )
    parser.add_argument("--scratch", default=None, help="folder for data (default: a temp dir)")
    parser.add_argument("--out", default=str(RESULTS), help="where results and charts go")
    parser.add_argument("--no-charts", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.incore_concurrency = args.e2e_concurrency = args.pg_concurrency = "1,64"
    for name in ("incore_concurrency", "e2e_concurrency", "pg_concurrency"):
        setattr(args, name, [int(part) for part in getattr(args, name).split(",")])
    return args


def _best(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return max(points, key=lambda point: point["per_s"])


def _scrape_ok(metrics_url: str, method: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("grpc_server_handled_total{")
            and f'grpc_method="{method}"' in line
            and 'grpc_code="OK"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


_KIND_METHOD = {
    "lookup": "GetMember",
    "checkout": "Checkout",
    "recharge": "Recharge",
    "hot": "Checkout",
}


def _e2e_point(
    server: common.Server, workload: str, concurrency: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One load point; guards: the server counted exactly the OK answers the client got."""
    methods = sorted({_KIND_METHOD[kind] for kind in mpload._kinds(workload)})
    counted_before = {m: _scrape_ok(server.metrics_url, m) for m in methods}
    cpu_before = common.process_cpu_s(server.pid)
    summary, _ = mpload.run(
        server.address, workload, concurrency, args.duration_s, args.members,
        token=server.token, processes=args.client_processes,
    )  # fmt: skip
    server_cpu_s = common.process_cpu_s(server.pid) - cpu_before
    assert summary["failed"] == 0, summary["statuses"]
    for method in methods:
        counted = _scrape_ok(server.metrics_url, method) - counted_before[method]
        by_client = sum(
            count for kind, count in summary["ok_by_kind"].items() if _KIND_METHOD[kind] == method
        )
        assert counted == by_client, (workload, method, counted, by_client)
    summary["server_cpu_us_per_request"] = round(server_cpu_s / max(summary["ok"], 1) * 1e6, 1)
    _print_point(f"e2e {workload}", summary)
    return summary


def _print_point(label: str, point: dict[str, Any]) -> None:
    cpu = ""
    if "client_cpu_us_per_request" in point:
        cpu = f"  cpu/req client {point['client_cpu_us_per_request']:.0f} us"
        if "server_cpu_us_per_request" in point:
            cpu += f" server {point['server_cpu_us_per_request']:.0f} us"
    print(
        f"{label:<24} c={point['concurrency']:<4} {point['per_s']:>9,.0f}/s"
        f"  p50 {point['p50_ms']:.2f}  p99 {point['p99_ms']:.2f}  p999 {point['p999_ms']:.2f} ms{cpu}",
        flush=True,
    )


def _hot_point(server: common.Server, args: argparse.Namespace) -> dict[str, Any]:
    """All load on HOT_MEMBERS members; guard: their cumulative spend grew by exactly the
    amounts due of the OK answers."""
    from engine.proto import transaction_pb2

    before = _spend_of_hot(server)
    cpu_before = common.process_cpu_s(server.pid)
    summary, results = mpload.run(
        server.address, "hot", args.hot_concurrency, args.duration_s, args.members,
        token=server.token, processes=args.client_processes, keep_answers=True,
    )  # fmt: skip
    server_cpu_s = common.process_cpu_s(server.pid) - cpu_before
    assert summary["failed"] == 0, summary["statuses"]
    due = sum(
        transaction_pb2.CheckoutResponse.FromString(answer).amount_due_fen
        for result in results
        for _, answer in result.acknowledged.values()
    )
    assert sum(_spend_of_hot(server)) - sum(before) == due
    summary["server_cpu_us_per_request"] = round(server_cpu_s / max(summary["ok"], 1) * 1e6, 1)
    summary["members"] = common.HOT_MEMBERS
    _print_point("e2e hot (10 members)", summary)
    return summary


def _spend_of_hot(server: common.Server) -> list[int]:
    import grpc

    metadata = common.call_metadata(server.token)
    with grpc.insecure_channel(server.address) as channel:
        lookup = channel.unary_unary(common.GET_MEMBER_METHOD)
        return [
            member_pb2.GetMemberResponse.FromString(
                lookup(common.encode_lookup(common.phone(index)), timeout=30, metadata=metadata)
            ).member.cumulative_spend_fen
            for index in range(common.HOT_MEMBERS)
        ]


def _first_lookup_s(server: common.Server) -> float:
    """Time until the server answers its first lookup (the map is opened lazily)."""
    import grpc

    began = time.perf_counter()
    metadata = common.call_metadata(server.token)
    with grpc.insecure_channel(server.address) as channel:
        lookup = channel.unary_unary(common.GET_MEMBER_METHOD)
        lookup(
            common.encode_lookup(common.phone(0)), timeout=STARTUP_LOOKUP_TIMEOUT_S,
            metadata=metadata, wait_for_ready=True,
        )  # fmt: skip
    return time.perf_counter() - began


def run_e2e(data_dir: Path, args: argparse.Namespace, results: dict[str, Any]) -> None:
    server = common.start_server(common.mms_serve_command(data_dir))
    server.token = common.read_token(common.token_path(data_dir))
    try:
        footprint = results["footprint"]
        footprint["startup_to_listening_s"] = round(server.started_s, 3)
        footprint["startup_to_first_answer_s"] = round(
            server.started_s + _first_lookup_s(server), 3
        )
        footprint["server_memory_at_start"] = common.process_memory_bytes(server.pid)
        print(
            f"footprint: `mms serve` on {args.members:,} members listening after"
            f" {server.started_s:.2f} s; RSS {footprint['server_memory_at_start']['rss_bytes'] / 2**20:.0f} MiB",
            flush=True,
        )
        e2e: dict[str, Any] = {}
        for workload in E2E_WORKLOADS:
            e2e[workload] = [
                _e2e_point(server, workload, concurrency, args)
                for concurrency in args.e2e_concurrency
            ]
        e2e["hot"] = [_hot_point(server, args)]
        results["e2e"] = e2e
        footprint["server_memory_after_load"] = common.process_memory_bytes(server.pid)
    finally:
        assert server.stop() == 0, "".join(server.output[-20:])


def run_empty(args: argparse.Namespace, results: dict[str, Any], scratch: str) -> None:
    # The empty server bootstraps an admin on its own temp core and saves the token here:
    # every call is authenticated by the same interceptor as the engine's methods.
    token_file = Path(scratch) / "empty-token"
    command = [
        sys.executable,
        str(common.BENCH / "empty_server.py"),
        "--token-file",
        str(token_file),
    ]
    server = common.start_server(command, needs_metrics=False)
    server.token = common.read_token(token_file)
    try:
        points = []
        for concurrency in args.e2e_concurrency:
            cpu_before = common.process_cpu_s(server.pid)
            summary, _ = mpload.run(
                server.address, "empty", concurrency, args.duration_s, args.members,
                token=server.token, processes=args.client_processes,
            )  # fmt: skip
            cpu_s = common.process_cpu_s(server.pid) - cpu_before
            assert summary["failed"] == 0, summary["statuses"]
            summary["server_cpu_us_per_request"] = round(cpu_s / max(summary["ok"], 1) * 1e6, 1)
            _print_point("empty method", summary)
            points.append(summary)
        results["empty_rpc"] = points
    finally:
        server.stop()


def run_postgres(args: argparse.Namespace, results: dict[str, Any], token: str) -> None:
    """`token`: sent with every call to the Python+PostgreSQL server, which ignores it, so
    that the client does the same work as against the engine."""
    pg = peer_pg.start(args.scratch)
    try:
        load_s = peer_pg.load(pg, args.members)
        print(f"postgres: {args.members:,} members loaded in {load_s:.1f} s", flush=True)
        version = pg.psql("SHOW server_version")
        points = []
        for clients in args.pg_concurrency:
            point = peer_pg.pgbench(pg, args.members, clients, args.duration_s)
            _print_point("pgbench PL/pgSQL settle", point)
            points.append(point)
        results["pgbench"] = {"server_version": version, "points": points}
        command = [sys.executable, str(common.BENCH / "peer_pg_server.py"), "--dsn", pg.dsn]
        server = common.start_server(command, needs_metrics=False)
        try:
            points = []
            for concurrency in args.e2e_concurrency:
                before = peer_pg.settled_count(pg)
                cpu_before = common.process_cpu_s(server.pid)
                summary, _ = mpload.run(
                    server.address, "checkout", concurrency, args.duration_s, args.members,
                    token=token, processes=args.client_processes,
                )  # fmt: skip
                cpu_s = common.process_cpu_s(server.pid) - cpu_before
                assert summary["failed"] == 0, summary["statuses"]
                assert peer_pg.settled_count(pg) - before == summary["ok"]
                summary["server_cpu_us_per_request"] = round(cpu_s / max(summary["ok"], 1) * 1e6, 1)
                _print_point("python+postgres checkout", summary)
                points.append(summary)
            results["python_pg"] = points
        finally:
            server.stop()
        results["pg_books"] = peer_pg.check_books(pg)
    finally:
        pg.stop()


def run_raw_lmdb(args: argparse.Namespace, results: dict[str, Any]) -> None:
    writes = results["settlement_writes"]
    batch = max(1, round(_best(results["incore"]["durable"])["mean_batch_size"]))
    done = subprocess.run(
        [sys.executable, str(common.BENCH / "raw_lmdb.py"),
         "--members", str(args.members), "--records", str(writes["records_per_settlement"]),
         "--inserted", str(writes["inserted_per_settlement"]),
         "--bytes", str(writes["bytes_per_settlement"]), "--batch", str(batch),
         "--duration-s", str(args.duration_s)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    results["raw_lmdb"] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"raw LMDB (storage ceiling)  {results['raw_lmdb']['per_s']:>9,.0f} settlements/s"
        f" (batches of {batch}, {writes['bytes_per_settlement']:.0f} bytes in"
        f" {writes['records_per_settlement']} writes each, durable)",
        flush=True,
    )


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each ratio compares the best throughput (over concurrency) of two systems."""
    core = _best(results["incore"]["durable"])["per_s"]
    e2e = _best(results["e2e"]["checkout"])["per_s"]
    pairs = {
        "core_vs_pgbench": (core, _best(results["pgbench"]["points"])["per_s"]),
        "e2e_vs_python_pg": (e2e, _best(results["python_pg"])["per_s"]),
        "e2e_vs_empty_rpc": (e2e, _best(results["empty_rpc"])["per_s"]),
        "core_vs_raw_lmdb": (core, results["raw_lmdb"]["per_s"]),
    }
    return {
        name: {"ratio": round(a / b, 2) if b else 0.0, "a_per_s": a, "b_per_s": b}
        for name, (a, b) in pairs.items()
    }


TARGETS = {
    "core_vs_pgbench": ">= 10x",
    "e2e_vs_python_pg": ">= 2x",
    "e2e_vs_empty_rpc": ">= 0.85x",
}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the figure and whether it was met (reported only)."""
    found = []
    for name, wanted in TARGETS.items():
        ratio = results["ratios"][name]["ratio"]
        found.append({"target": f"{name} {wanted}", "value": ratio,
                      "met": ratio >= float(wanted.strip(">= x"))})  # fmt: skip
    moderate = [p for p in results["e2e"]["lookup"] if 1 < p["concurrency"] <= 16]
    lookup = moderate[0] if moderate else results["e2e"]["lookup"][0]
    found.append({"target": f"lookup p99 < 1 ms at c={lookup['concurrency']}",
                  "value": lookup["p99_ms"], "met": lookup["p99_ms"] < 1.0})  # fmt: skip
    footprint = results["footprint"]
    per_member = footprint["used_bytes_per_member"]
    found.append({"target": "< 1 KiB database per member", "value": per_member,
                  "met": per_member < 1024})  # fmt: skip
    startup = footprint["startup_to_first_answer_s"]
    found.append({"target": "startup < 1 s", "value": startup, "met": startup < 1.0})
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    loaded = common.warn_if_loaded()
    common.check_encoders()
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine_at_start": common.machine(),
        "loaded_machine": loaded,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
    }
    scratch = tempfile.mkdtemp(prefix="mms-bench-", dir=args.scratch)
    try:
        results["settlement_writes"] = dataset.settlement_write_bytes()
        data_dir = Path(scratch) / "data"
        results["footprint"] = dataset.build(data_dir, args.members)
        results["incore"] = {
            "durable": incore.sweep(
                str(data_dir), args.members, args.incore_concurrency, args.duration_s, True
            ),
            "no_sync_not_durable": incore.sweep(
                str(data_dir), args.members, args.incore_concurrency, args.duration_s, False
            ),
        }
        run_raw_lmdb(args, results)
        run_e2e(data_dir, args, results)
        run_empty(args, results, scratch)
        run_postgres(args, results, common.read_token(common.token_path(data_dir)))
        results["crash"] = crash.run(scratch, args.crash_members, 64, max(2.0, args.duration_s))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["ratios"] = ratios(results)
    results["targets"] = targets(results)
    results["machine_at_end"] = common.machine()
    results["total_s"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"bench-{stamp}.json"
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    if not args.no_charts:
        import charts

        for chart in charts.draw(results, out, stamp):
            print(f"chart: {chart}")
    print(f"results: {path} ({results['total_s']:.0f} s in all)")
    for target in results["targets"]:
        mark = "met" if target["met"] else "MISSED"
        print(f"target {target['target']}: {target['value']} ({mark})")
    if loaded or results["machine_at_end"]["load_average"][0] > common.QUIET_LOAD_AVERAGE:
        print("WARNING: the machine was loaded during this run (see machine_* in the JSON)")
    for name, ratio in results["ratios"].items():
        print(
            f"ratio {name}: {ratio['ratio']:.2f}x ({ratio['a_per_s']:,.0f}/s vs {ratio['b_per_s']:,.0f}/s)"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
