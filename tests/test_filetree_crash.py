"""Crash safety: a process killed with SIGKILL mid-load leaves every acknowledged put intact, and no half file."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from kvrt import Runtime
from kvrt.backends.filetree import FileTreeBackend
from kvrt.handle import AttachedFullHandle
from kvrt.testing.conformance import LOOPS

WRITER = """
import sys, anyio
from kvrt import Runtime
from kvrt.backends.filetree import FileTreeBackend

def value(writer, number):
    return {"writer": writer, "number": number, "pad": "x" * (number % 97) * 40}

async def main(directory):
    async with Runtime() as runtime:
        store = await runtime.spawn(FileTreeBackend(directory))
        async def writer(n):
            for i in range(1_000_000):
                await store.put(f"w{n}-{i}", value(n, i), collection="load")
                sys.stdout.write(f"w{n}-{i}\\n")
                sys.stdout.flush()
        async with anyio.create_task_group() as group:
            for n in range(16):
                group.start_soon(writer, n)

anyio.run(main, sys.argv[1], backend=sys.argv[2])
"""


def _expected(key: str) -> dict[str, object]:
    writer, number = (int(part) for part in key[1:].split("-"))
    return {"writer": writer, "number": number, "pad": "x" * (number % 97) * 40}


@pytest.mark.parametrize("loop", LOOPS)
def test_every_acknowledged_put_survives_sigkill(tmp_path: Path, loop: str) -> None:
    directory = tmp_path / "tree"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), loop],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    acknowledged: list[str] = []
    buffer = b""
    deadline = time.monotonic() + 60
    assert child.stdout is not None
    try:
        while len(acknowledged) < 3000 and time.monotonic() < deadline and child.poll() is None:
            ready, _, _ = select.select([child.stdout], [], [], 1.0)
            if ready:
                buffer += os.read(child.stdout.fileno(), 65536)
                *lines, buffer = buffer.split(b"\n")
                acknowledged += [line.decode() for line in lines]
        child.send_signal(signal.SIGKILL)
        rest, errors = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    acknowledged += [line.decode() for line in (buffer + rest).split(b"\n")[:-1]]
    assert child.returncode == -signal.SIGKILL, errors.decode()[-2000:]
    assert len(acknowledged) >= 3000, "the writer did not get going"

    for path in (directory / "load").iterdir():  # every entry file is whole, whether acknowledged or not
        if path.suffix == ".json":
            assert json.loads(path.read_bytes())["value"] == _expected(path.stem), f"{path.name} is damaged"

    async def verify() -> None:
        async with Runtime() as runtime:
            store = await runtime.spawn(FileTreeBackend(directory))
            assert isinstance(store, AttachedFullHandle)  # every segment
            for start in range(0, len(acknowledged), 500):
                keys = acknowledged[start : start + 500]
                found = await store.get_many(keys, collection="load")
                for key, value in zip(keys, found, strict=True):
                    assert value == _expected(key), f"acknowledged put {key} lost or damaged"
            listed = await store.keys("load")
            assert set(acknowledged) <= set(listed)
            assert all(key.startswith("w") for key in listed), "a temporary file listed as an entry"
            await store.cull()
        left = [path.name for path in directory.rglob(".kvrt-*.tmp")]
        assert left == [], f"the killed writer's temporary files were not removed: {left[:5]}"

    anyio.run(verify, backend=loop)
