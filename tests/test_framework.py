"""A framework's store-using component over ``kvrt.open``, as FastMCP's middleware uses a store.

The stand-in does what such middleware does: it receives its store when constructed, at import
time; each connection's task calls it; and the framework shuts it down from another scope than
the one that started serving (a lifespan closed by the server, a fixture torn down in its own
task).
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

import kvrt
from kvrt.protocol import AsyncKeyValue

pytestmark = pytest.mark.anyio


class ResponseCachingMiddleware:
    """Caches a tool's responses in whatever AsyncKeyValue it is given (as FastMCP's does)."""

    def __init__(self, cache_storage: AsyncKeyValue, ttl: float = 60.0) -> None:
        self.cache = cache_storage
        self.ttl = ttl
        self.calls = 0

    async def __call__(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        key = f"{tool}:{sorted(arguments.items())}"
        cached = await self.cache.get(key, collection="responses")
        if cached is not None:
            return cached
        self.calls += 1
        await anyio.lowlevel.checkpoint()  # the tool's own work
        response = {"tool": tool, "result": sum(arguments.values())}
        await self.cache.put(key, response, collection="responses", ttl=self.ttl)
        return response


MIDDLEWARE = ResponseCachingMiddleware(cache_storage=kvrt.open("memory://", name="responses"))
"""Made at import time, as a framework's user writes it: no event loop is running yet."""


class Server:
    """Serves connections in a task group of its own; its lifespan ends in another scope than it began."""

    def __init__(self, middleware: ResponseCachingMiddleware) -> None:
        self.middleware = middleware
        self.answers: list[dict[str, Any]] = []

    async def connection(self, number: int) -> None:
        for request in range(20):
            arguments = {"a": request % 5, "b": number % 3}
            answer = await self.middleware("add", arguments)
            assert answer == {"tool": "add", "result": sum(arguments.values())}
            self.answers.append(answer)

    async def serve(self, connections: int) -> None:
        async with anyio.create_task_group() as group:
            for number in range(connections):
                group.start_soon(self.connection, number)


async def test_middleware_over_kvrt_open_serves_connections_and_shuts_down_cleanly() -> None:
    server = Server(MIDDLEWARE)
    MIDDLEWARE.calls = 0
    async with anyio.create_task_group() as lifespan:
        lifespan.start_soon(server.serve, 12)  # the server runs in a task the framework owns
    assert len(server.answers) == 12 * 20
    assert 15 <= MIDDLEWARE.calls < 12 * 20 / 2, "15 distinct requests: most answers came from the cache"
    assert await MIDDLEWARE.cache.get("add:[('a', 0), ('b', 0)]", collection="responses") == {
        "tool": "add",
        "result": 0,
    }

    async def shutdown() -> None:  # the framework closes the store from its own scope
        handle = MIDDLEWARE.cache
        assert isinstance(handle, kvrt.detached.DetachedHandle)
        await handle.aclose()

    async with anyio.create_task_group() as other_scope:
        other_scope.start_soon(shutdown)
    with pytest.raises(kvrt.errors.RuntimeClosedError):
        await MIDDLEWARE.cache.get("anything")
    MIDDLEWARE.cache = kvrt.open("memory://", name="responses")  # the next test (other loop) opens it again
