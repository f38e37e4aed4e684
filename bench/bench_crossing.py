"""What a thread crossing costs on this machine, and so the most a detached handle can reach.

A detached handle's request goes to the runtime's loop in another thread and its reply comes
back; the two threads share one GIL, so their work adds up. This bench measures the crossing
alone, with nothing around it: callers on one asyncio loop hand a future to a second loop in
another thread through a batching doorbell (a deque and one ``call_soon_threadsafe`` per batch,
kvrt's design), which sets it at once, against the same handoff on one loop. The difference is
the least any cross-thread handle adds per request. Beside it, kvrt's attached memory and Redis
handles in the same process give the cost that is added to, and so the ceiling:
``attached / (attached + crossing)``.

    python bench/bench_crossing.py            # best of 3
    python bench/bench_crossing.py --write    # also rewrite its section of bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from harness import write_section

import kvrt
from kvrt.backends.base import Backend
from kvrt.backends.memory import MemoryBackend
from kvrt.backends.redis import RedisBackend
from kvrt.testing.servers import RedisTarget, redis_binary, redis_server

CALLERS = (1, 64)
OPERATIONS = 64_000
VALUE = {"name": "Alice", "age": 30, "active": True}


class _Bell:
    """Items for another loop, which is woken once per batch (as kvrt's Doorbell)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, serve: Callable[[Any], None]) -> None:
        self.items: deque[Any] = deque()
        self.rung = False
        self.loop = loop
        self.serve = serve

    def ring(self, item: Any) -> None:
        self.items.append(item)
        if not self.rung:
            self.rung = True
            self.loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        self.rung = False
        while self.items:
            self.serve(self.items.popleft())


def _answer(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _per_request(callers: int, call: Callable[[], Awaitable[Any]]) -> float:
    """Microseconds per call with ``callers`` tasks calling ``call`` in turn."""

    async def caller() -> None:
        for _ in range(OPERATIONS // callers):
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return (time.perf_counter() - started) / OPERATIONS * 1e6


async def bare(callers: int, crossing: bool) -> float:
    """The handoff alone: to a loop in another thread (``crossing``), or on this loop."""
    loop = asyncio.get_running_loop()
    other = asyncio.new_event_loop() if crossing else loop
    thread = threading.Thread(target=other.run_forever, daemon=True) if crossing else None
    if thread is not None:
        thread.start()
    replies = _Bell(loop, _answer)
    requests = _Bell(other, replies.ring)

    def call() -> asyncio.Future[None]:
        future = loop.create_future()
        requests.ring(future)
        return future

    try:
        return await _per_request(callers, call)
    finally:
        if thread is not None:
            other.call_soon_threadsafe(other.stop)
            thread.join()
            other.close()


async def attached(callers: int, backend: Callable[[], Backend]) -> float:
    """kvrt's attached handle: gets of keys put first."""
    async with kvrt.Runtime() as runtime:
        store = await runtime.spawn(backend())
        keys = [f"k{index}" for index in range(256)]
        await store.put_many(keys, [VALUE] * len(keys))
        index = 0

        def call() -> Awaitable[Any]:
            nonlocal index
            index += 1
            return store.get(keys[index & 255])

        return await _per_request(callers, call)


async def measure(rounds: int, redis_url: str) -> dict[tuple[str, int], float]:
    subjects: dict[str, Callable[[int], Awaitable[float]]] = {
        "same loop": lambda callers: bare(callers, crossing=False),
        "crossing": lambda callers: bare(callers, crossing=True),
        "attached memory": lambda callers: attached(callers, MemoryBackend),
        "attached redis": lambda callers: attached(callers, lambda: RedisBackend(redis_url)),
    }
    best: dict[tuple[str, int], float] = {}
    for _ in range(rounds):
        for callers in CALLERS:
            for name, subject in subjects.items():
                cost = await subject(callers)
                best[name, callers] = min(best.get((name, callers), cost), cost)
    return best


def report(best: dict[tuple[str, int], float], rounds: int) -> str:
    lines = [
        "## Thread crossing, asyncio",
        "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Python {platform.python_version()}, {platform.machine()}, {sys.platform}; best of {rounds} rounds, "
        "same process.",
        "",
        "| callers | same loop µs/op | crossing µs/op | crossing adds µs/op | attached memory get µs/op "
        "| ceiling, memory | attached Redis get µs/op | ceiling, Redis |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for callers in CALLERS:
        added = best["crossing", callers] - best["same loop", callers]
        memory, redis = best["attached memory", callers], best["attached redis", callers]
        lines.append(
            f"| {callers} | {best['same loop', callers]:.2f} | {best['crossing', callers]:.2f} | {added:.2f} "
            f"| {memory:.2f} | {memory / (memory + added):.2f}x | {redis:.2f} | {redis / (redis + added):.2f}x |"
        )
    lines += [
        "",
        "The ceiling is the most a detached handle can reach against an attached one if kvrt's crossing cost "
        "nothing beyond the bare handoff: `attached / (attached + crossing adds)`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="rewrite this bench's section of bench/RESULTS.md")
    args = parser.parse_args()
    with redis_server(redis_binary()) as process:
        url = RedisTarget([("127.0.0.1", process.port)]).url
        best = asyncio.run(measure(args.rounds, url))
    text = report(best, args.rounds)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
