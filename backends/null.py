"""A store that keeps nothing: every write is accepted and forgotten, every read misses."""

from __future__ import annotations

from collections.abc import Sequence

from kvrt.backends.base import Backend, Capabilities


class NullBackend(Backend):
    """Accepts every write and stores nothing; useful to disable caching without changing callers."""

    name = "null"
    capabilities = Capabilities(native_ttl=True, max_batch=1 << 20)

    async def get_many(self, collection: str, keys: Sequence[str]) -> list[bytes | str | None]:
        """Miss every key."""
        return [None] * len(keys)

    async def put_many(
        self,
        collection: str,
        keys: Sequence[str],
        entries: Sequence[bytes],
        expires_at: Sequence[float | None],
    ) -> None:
        """Forget the entries."""

    async def delete_many(self, collection: str, keys: Sequence[str]) -> list[bool]:
        """Remove nothing."""
        return [False] * len(keys)
