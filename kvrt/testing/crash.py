"""Crash safety: a writer process on a backend, killed with SIGKILL mid-load, and what it had acknowledged.

The writer runs 16 callers putting entries into the collection ``load`` and prints each key once its
put returned. The test reads those lines, kills the process with SIGKILL once enough are in, and
gets every acknowledged key back: reopened, the backend must hold each one intact.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kvrt.protocol import AsyncKeyValue

COLLECTION = "load"

_WRITER = """
import sys, anyio
from kvrt import Runtime
from kvrt.testing.crash import COLLECTION, value
{imports}

async def main(directory):
    async with Runtime() as runtime:
        store = await runtime.spawn({backend})
        async def writer(n):
            for i in range(1_000_000):
                await store.put(f"w{{n}}-{{i}}", value(n, i), collection=COLLECTION)
                sys.stdout.write(f"w{{n}}-{{i}}\\n")
                sys.stdout.flush()
        async with anyio.create_task_group() as group:
            for n in range(16):
                group.start_soon(writer, n)

anyio.run(main, sys.argv[1], backend=sys.argv[2])
"""


def value(writer: int, number: int) -> dict[str, Any]:
    """Return what writer ``writer`` puts as its ``number``-th entry (sizes vary, from 0 to 3,840 bytes of pad)."""
    return {"writer": writer, "number": number, "pad": "x" * (number % 97) * 40}


def expected(key: str) -> dict[str, Any]:
    """Return the value the writer put under ``key``."""
    writer, number = (int(part) for part in key[1:].split("-"))
    return value(writer, number)


def kill_mid_load(imports: str, backend: str, directory: Path, loop: str, *, acknowledged: int = 3_000) -> list[str]:
    """Run the writer on ``backend`` until it acknowledged ``acknowledged`` puts, SIGKILL it; return the keys.

    ``backend`` is the source of an expression over ``directory`` (a ``str`` in the writer) that makes
    the backend, after the ``imports`` it needs; the writer runs on ``loop``.
    """
    source = _WRITER.format(imports=imports, backend=backend)
    child = subprocess.Popen(
        [sys.executable, "-c", source, str(directory), loop], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    keys: list[str] = []
    buffer = b""
    deadline = time.monotonic() + 60
    assert child.stdout is not None
    try:
        while len(keys) < acknowledged and time.monotonic() < deadline and child.poll() is None:
            ready, _, _ = select.select([child.stdout], [], [], 1.0)
            if ready:
                buffer += os.read(child.stdout.fileno(), 65536)
                *lines, buffer = buffer.split(b"\n")
                keys += [line.decode() for line in lines]
        child.send_signal(signal.SIGKILL)
        rest, errors = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    keys += [line.decode() for line in (buffer + rest).split(b"\n")[:-1]]
    assert child.returncode == -signal.SIGKILL, errors.decode()[-2000:]
    assert len(keys) >= acknowledged, "the writer did not get going"
    return keys


async def assert_intact(store: AsyncKeyValue, keys: list[str]) -> None:
    """Check that ``store`` holds every acknowledged key with the value its writer put."""
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        found = await store.get_many(chunk, collection=COLLECTION)
        for key, stored in zip(chunk, found, strict=True):
            assert stored == expected(key), f"acknowledged put {key} lost or damaged"
