from __future__ import annotations

import pytest

from kvrt.backends.null import NullBackend
from kvrt.handle import Handle
from kvrt.testing import ValidationSuite


class TestNullBackend(ValidationSuite):
    @pytest.fixture
    def backend(self) -> NullBackend:
        return NullBackend()

    async def test_stores_nothing(self, store: Handle) -> None:
        await store.put("k", {"v": 1})
        await store.put_many(["a", "b"], [{"v": 1}, {"v": 2}], ttl=10)
        assert await store.get("k") is None
        assert await store.get_many(["a", "b"]) == [None, None]
        assert await store.ttl("a") == (None, None)
        assert await store.delete("k") is False
        assert await store.delete_many(["a", "b"]) == 0
