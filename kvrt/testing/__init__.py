"""The conformance suite every kvrt backend passes, for your own backends too (needs pytest and anyio).

Subclass a suite in a test module and give it a ``backend`` fixture that returns a fresh backend::

    import pytest
    from kvrt.testing import ConformanceSuite

    class TestMyBackend(ConformanceSuite):
        @pytest.fixture
        def backend(self):
            return MyBackend(...)

Every test runs under asyncio and under trio. :class:`ConformanceSuite` holds every clause of the
behavioural contract; :class:`ValidationSuite`, the clauses about refusing bad input, is the part that
applies even to a backend that stores nothing; :class:`BehaviourSuite`, everything but the stored
format, is for a backend that keeps its store's own format. :class:`DetachedConformanceSuite` and
:class:`BlockingConformanceSuite` run the whole suite again through ``kvrt.open`` and ``kvrt.sync``.
"""

from kvrt.testing.conformance import (
    BehaviourSuite,
    BlockingConformanceSuite,
    ConformanceSuite,
    DetachedConformanceSuite,
    ValidationSuite,
    raw_get,
    raw_put,
)

__all__ = [
    "BehaviourSuite",
    "BlockingConformanceSuite",
    "ConformanceSuite",
    "DetachedConformanceSuite",
    "ValidationSuite",
    "raw_get",
    "raw_put",
]
