"""The main job runs on its embedded defaults and shows what it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvrt.demo import run_demo

pytestmark = pytest.mark.anyio


async def test_demo_serves_culls_and_persists(tmp_path: Path) -> None:
    lines: list[str] = []
    final = await run_demo(seconds=1.2, callers=8, directory=str(tmp_path), say=lines.append)
    assert set(final) == {"sessions", "cache", "ratelimit", "profiles"}
    assert all(sum(stats.ops.values()) > 0 for stats in final.values())
    assert all(not stats.errors for stats in final.values())
    reopened = lines[-1]
    assert reopened.startswith(f"\nreopened {tmp_path}")
    kept = int(reopened.split(": ")[1].split(" profiles")[0].replace(",", ""))
    assert kept > 0
