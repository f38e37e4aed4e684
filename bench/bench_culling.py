"""Foreground latency with and without background culling, on one memory worker.

Both runs hold 100,000 entries besides the foreground's own; in the culling run they have just
expired, so the worker culls them, a budgeted step between rounds, while 64 callers put and get.
Latency is timed per request by the callers; the culling run counts only requests answered while
culling was still going on. Runs alternate; the median of each is reported.

    python bench/bench_culling.py                 # print the table
    python bench/bench_culling.py --write         # also rewrite bench/RESULTS.md's culling section
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time

import anyio
from harness import write_section

import kvrt
from kvrt.backends.memory import MemoryBackend

ENTRIES = 100_000
CALLERS = 64


async def _run(culling: bool, budget: int) -> tuple[float, float, int]:
    """Return (p50 ms, p99 ms, requests measured)."""
    gc.collect()
    async with kvrt.Runtime(cull=kvrt.CullPolicy(interval=0.01, budget=budget)) as runtime:
        store = await runtime.spawn(MemoryBackend(max_entries_per_collection=ENTRIES * 2), name="m")
        names = [f"e{i}" for i in range(ENTRIES)]
        # Culling starts once the one-second expiry bucket of the entries has passed: make that
        # happen a moment after the callers are running, so every cull step meets foreground load.
        ttl = (int(time.time()) + 2 - time.time()) if culling else 3600.0
        for start in range(0, ENTRIES, 10_000):
            chunk = names[start : start + 10_000]
            await store.put_many(chunk, [{"i": 1}] * len(chunk), ttl=ttl, collection="old")
        latencies: list[float] = []
        culling_started = anyio.Event()
        culling_done = anyio.Event()

        async def monitor() -> None:
            while runtime.stats()["m"].culled == 0:  # noqa: ASYNC110 - one poller, not a stats() per request
                await anyio.sleep(0.0005)
            culling_started.set()
            while runtime.stats()["m"].culled < ENTRIES:  # noqa: ASYNC110
                await anyio.sleep(0.0005)
            culling_done.set()

        async def caller(number: int) -> None:
            started = time.monotonic()
            step = 0
            while time.monotonic() - started < (5.0 if culling else 2.0) and not culling_done.is_set():
                sent = time.perf_counter()
                if step % 2:
                    await store.get(f"live{number}")
                else:
                    await store.put(f"live{number}", {"n": step})
                if not culling or culling_started.is_set():
                    latencies.append(time.perf_counter() - sent)
                step += 1

        async with anyio.create_task_group() as group:
            if culling:
                group.start_soon(monitor)
            for number in range(CALLERS):
                group.start_soon(caller, number)
        if culling:
            assert culling_done.is_set(), "culling did not finish within the run"
    latencies.sort()
    return (
        latencies[len(latencies) // 2] * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
        len(latencies),
    )


async def main(rounds: int, budget: int) -> dict[str, list[tuple[float, float, int]]]:
    runs: dict[str, list[tuple[float, float, int]]] = {"without culling": [], "with culling": []}
    for _ in range(rounds):
        runs["without culling"].append(await _run(False, budget))
        runs["with culling"].append(await _run(True, budget))
    return runs


def _report(runs: dict[str, list[tuple[float, float, int]]], budget: int, command: str) -> str:
    medians = {
        label: (statistics.median(r[0] for r in results), statistics.median(r[1] for r in results))
        for label, results in runs.items()
    }
    lines = [
        "## Culling: foreground latency with and without background culling",
        "",
        f"Command: `{command}`  ",
        f"Python {platform.python_version()}, {platform.machine()}; {CALLERS} callers alternating put/get on one "
        f"memory worker holding {ENTRIES:,} other entries; cull budget {budget} per step; median of "
        f"{len(runs['with culling'])} alternating runs.",
        "",
        "| run | p50 | p99 | requests measured (per run) |",
        "| --- | ---: | ---: | --- |",
    ]
    for label, results in runs.items():
        p50, p99 = medians[label]
        counts = ", ".join(f"{r[2]:,}" for r in results)
        lines.append(f"| {label} | {p50:.3f} ms | {p99:.3f} ms | {counts} |")
    ratio = medians["with culling"][1] / medians["without culling"][1]
    lines += ["", f"Culling adds {100 * (ratio - 1):+.0f}% to p99 (aim: under +20%).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=kvrt.CullPolicy().budget)
    parser.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--write", action="store_true", help="rewrite the culling section of bench/RESULTS.md")
    args = parser.parse_args()
    results = anyio.run(main, args.rounds, args.budget, backend=args.loop)
    report = _report(results, args.budget, "python " + " ".join(sys.argv))
    print(report)
    if args.write:
        write_section(report)
