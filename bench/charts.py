"""PNG charts of a suite run: throughput against concurrency per system, and latency
percentiles (p50, p99, p999) per system at each one's best throughput."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _series(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    series = {
        "in-core durable": results["incore"]["durable"],
        "in-core no-sync (NOT durable)": results["incore"]["no_sync_not_durable"],
        "pgbench PL/pgSQL settle": results["pgbench"]["points"],
        "e2e checkout (mms serve)": results["e2e"]["checkout"],
        "e2e lookup": results["e2e"]["lookup"],
        "e2e mix": results["e2e"]["mix"],
        "Python+PostgreSQL gRPC checkout": results["python_pg"],
        "empty gRPC method": results["empty_rpc"],
    }
    return {name: points for name, points in series.items() if points}


def draw(results: dict[str, Any], out: Path, stamp: str) -> list[Path]:
    loaded = " (LOADED MACHINE)" if results.get("loaded_machine") else ""
    machine = results["machine_at_start"]
    subtitle = f"{machine['cpu_count']} CPUs, load {machine['load_average'][0]}{loaded}"
    series = _series(results)
    figure, axes = plt.subplots(figsize=(9, 5.5))
    for name, points in series.items():
        xs = [point["concurrency"] for point in points]
        ys = [point["per_s"] for point in points]
        axes.plot(xs, ys, marker="o", label=name)
    raw = results.get("raw_lmdb")
    if raw:
        axes.axhline(raw["per_s"], linestyle="--", color="grey", label="raw LMDB (storage ceiling)")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("concurrency (requests in flight)")
    axes.set_ylabel("requests per second (log)")
    axes.set_title(f"Throughput vs concurrency — {subtitle}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    throughput = out / f"throughput-{stamp}.png"
    figure.tight_layout()
    figure.savefig(throughput, dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(9, 5.5))
    names = list(series)
    best = [max(series[name], key=lambda point: point["per_s"]) for name in names]
    width = 0.27
    for offset, key in enumerate(("p50_ms", "p99_ms", "p999_ms")):
        xs = [index + (offset - 1) * width for index in range(len(names))]
        axes.bar(xs, [point[key] for point in best], width, label=key.replace("_ms", ""))
    axes.set_xticks(range(len(names)))
    axes.set_xticklabels(
        [f"{name}\nc={point['concurrency']}" for name, point in zip(names, best, strict=True)],
        rotation=30, ha="right", fontsize=7,
    )  # fmt: skip
    axes.set_yscale("log")
    axes.set_ylabel("latency, ms (log)")
    axes.set_title(f"Latency at each system's best throughput — {subtitle}")
    axes.grid(True, axis="y", which="both", alpha=0.3)
    axes.legend()
    latency = out / f"latency-{stamp}.png"
    figure.tight_layout()
    figure.savefig(latency, dpi=110)
    plt.close(figure)
    return [throughput, latency]
