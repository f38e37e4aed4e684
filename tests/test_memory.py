from __future__ import annotations

import time

import pytest

from kvrt import CullPolicy, Runtime
from kvrt.backends.memory import MemoryBackend
from kvrt.testing import ConformanceSuite
from kvrt.testing.conformance import LOOPS, eventually, raw_get, sleep_past


class TestMemoryConformance(ConformanceSuite):
    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend()


@pytest.fixture(params=LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_least_recently_used_goes_first() -> None:
    async with Runtime() as runtime:
        store = await runtime.spawn(MemoryBackend(max_entries_per_collection=3))
        await store.put_many(["a", "b", "c"], [{"v": 1}, {"v": 2}, {"v": 3}])
        assert await store.get("a") == {"v": 1}  # now "b" is the least recently used
        await store.put("d", {"v": 4})
        assert await store.get_many(["a", "b", "c", "d"]) == [{"v": 1}, None, {"v": 3}, {"v": 4}]
        await store.put("x", {"v": 0}, collection="other")
        assert await store.get("a") == {"v": 1}, "the bound is per collection"


def test_bound_must_be_a_positive_int() -> None:
    for bad in (0, -1, 1.5, None):
        with pytest.raises(ValueError, match="positive int"):
            MemoryBackend(max_entries_per_collection=bad)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_expired_entries_are_culled_in_the_background() -> None:
    async with Runtime(cull=CullPolicy(interval=0.05, budget=100)) as runtime:
        store = await runtime.spawn(MemoryBackend(max_entries_per_collection=5000), name="m")
        await store.put_many([f"k{i}" for i in range(1000)], [{"i": i} for i in range(1000)], ttl=0.2)
        await store.put("kept", {"v": 1})
        await sleep_past(time.time() + 0.2)
        await eventually(lambda: runtime.stats()["m"].culled >= 1000)
        assert await raw_get(store, "default_collection", "k7") is None
        assert await store.get("kept") == {"v": 1}
        assert runtime.stats()["m"].culled == 1000


@pytest.mark.anyio
async def test_cull_heap_forgets_overwritten_entries() -> None:
    backend = MemoryBackend()
    far = time.time() + 1000
    for _ in range(5):
        await backend.put_many("c", [f"k{i}" for i in range(1000)], [b"{}"] * 1000, [far] * 1000)
    assert len(backend._expiries) == 5000
    assert await backend.cull(100) == 0
    assert len(backend._expiries) == 1000
