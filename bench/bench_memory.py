"""kvrt's memory handle against py-key-value-aio's MemoryStore (see harness.py for the method).

Also reports the cost of encoding and decoding one request frame.

    python bench/bench_memory.py                 # print the table
    python bench/bench_memory.py --write         # also rewrite bench/RESULTS.md's memory section
"""

from __future__ import annotations

import timeit
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from harness import kvrt_memory, main
from key_value.aio.stores.memory import MemoryStore

from kvrt import frames


@asynccontextmanager
async def reference_memory() -> AsyncIterator[MemoryStore]:
    yield MemoryStore()


def frame_cost() -> list[str]:
    entry = (
        b'{"collection": "bench", "created_at": "2026-01-01T00:00:00.000000+00:00", "key": "user-1", '
        b'"value": {"active": true, "age": 30, "name": "Alice"}, "version": 1}'
    )
    requests: dict[str, frames.AnyRequest] = {
        "get": frames.Get(None, "bench", ["user-1"]),
        "put": frames.Put(None, "bench", ["user-1"], [entry], None),
    }
    number = 200_000
    lines = ["", "Frame cost (msgpack, reused encoder/decoder), per request:", ""]
    for label, request in requests.items():
        frame = frames.encode(request)
        encode = timeit.timeit(partial(frames.encode, request), number=number) / number * 1e9
        decode = timeit.timeit(partial(frames.decode, frame), number=number) / number * 1e9
        lines.append(f"- {label}: encode {encode:.0f} ns, decode {decode:.0f} ns, {len(frame)} bytes")
    return lines


if __name__ == "__main__":
    main(
        "Memory: kvrt vs py-key-value-aio MemoryStore",
        {"kvrt": kvrt_memory, "reference": reference_memory},
        "memory",
        frame_cost,
    )
