"""A login that works beside one that is refused, and everything kvrt showed of both: where a password must not be."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import structlog.testing

from kvrt.backends.base import Backend
from kvrt.errors import KeyValueError
from kvrt.runtime import Runtime

GOOD_PASSWORD = "pw-s3cr3t-1"
BAD_PASSWORD = "pw-wrong-2"


async def logins_shown(make: Callable[[str], Backend]) -> tuple[KeyValueError, str]:
    """Spawn ``make(GOOD_PASSWORD)`` and use it, then ``make(BAD_PASSWORD)``, whose spawn must fail.

    Return that failure and the text of everything kvrt showed meanwhile: the errors and their
    causes, the backends' reprs, the runtime's stats and every log event. Neither password may be in it.
    """
    shown: list[str] = []
    with structlog.testing.capture_logs() as logs:
        async with Runtime() as runtime:
            good = make(GOOD_PASSWORD)
            store = await runtime.spawn(good, name="good")
            await store.put("k", {"v": 1})
            assert await store.get("k") == {"v": 1}
            bad = make(BAD_PASSWORD)
            with pytest.raises(KeyValueError) as refused:
                await runtime.spawn(bad, name="bad")
            error: BaseException | None = refused.value
            while error is not None:
                shown += [str(error), repr(error)]
                error = error.__cause__ or error.__context__
            shown += [repr(good), repr(bad), repr(runtime.stats())]
    shown += [repr(entry) for entry in logs]
    return refused.value, "\n".join(shown)
