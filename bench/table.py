"""Prints the README's Performance table (Markdown) from a suite result JSON.

.venv/bin/python bench/table.py bench/results/bench-<time>.json
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _best(points: list[dict[str, Any]]) -> dict[str, Any]:
    return max(points, key=lambda point: point["per_s"])


def rows(results: dict[str, Any]) -> list[str]:
    lines = [
        "| system | best /s | at concurrency | p50 ms | p99 ms | p999 ms |",
        "|---|---|---|---|---|---|",
    ]
    systems = [
        ("in-core settle, durable", results["incore"]["durable"]),
        ("in-core settle, no-sync (NOT durable)", results["incore"]["no_sync_not_durable"]),
        ("pgbench, PL/pgSQL settle (synchronous_commit=on)", results["pgbench"]["points"]),
        ("e2e checkout, `mms serve`", results["e2e"]["checkout"]),
        ("e2e lookup by phone", results["e2e"]["lookup"]),
        ("e2e recharge", results["e2e"]["recharge"]),
        ("e2e mix (50 % lookup, 40 % checkout, 10 % recharge)", results["e2e"]["mix"]),
        ("e2e checkout, 10 hot members", results["e2e"]["hot"]),
        ("Python+PostgreSQL gRPC checkout", results["python_pg"]),
        ("empty gRPC method, engine's stack", results["empty_rpc"]),
    ]
    for name, points in systems:
        best = _best(points)
        lines.append(
            f"| {name} | {best['per_s']:,.0f} | {best['concurrency']} | {best['p50_ms']:.2f}"
            f" | {best['p99_ms']:.2f} | {best.get('p999_ms', 0):.2f} |"
        )
    raw = results["raw_lmdb"]
    lines.append(
        f"| raw LMDB, same bytes per settle, batches of {raw['batch']} | {raw['per_s']:,.0f} | 1 | | | |"
    )
    lines.append("")
    for name, ratio in results["ratios"].items():
        lines.append(
            f"- `ratio {name}: {ratio['ratio']:.2f}x ({ratio['a_per_s']:,.0f}/s vs {ratio['b_per_s']:,.0f}/s)`"
        )
    lines.append("")
    for target in results["targets"]:
        lines.append(
            f"- target {target['target']}: {target['value']} ({'met' if target['met'] else 'MISSED'})"
        )
    return lines


def main() -> int:
    with open(sys.argv[1]) as file:
        results = json.load(file)
    print("\n".join(rows(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
