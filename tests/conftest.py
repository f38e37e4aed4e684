"""Every async test in this suite runs under asyncio and under trio."""

from __future__ import annotations

import pytest

from kvrt.testing.conformance import LOOPS


@pytest.fixture(params=LOOPS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
