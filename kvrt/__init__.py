"""kvrt: a runtime for async key-value stores.

Each backend runs as a supervised worker actor that owns its driver; client handles implement the
``AsyncKeyValue`` protocol and send it encoded requests over bounded in-memory streams. Retry,
deadlines, backpressure and TTL culling are how the runtime schedules its workers.
"""

from typing import Any

from kvrt.detached import DetachedRuntime, open
from kvrt.entry import DEFAULT_COLLECTION
from kvrt.handle import Handle
from kvrt.policies import CircuitPolicy, CullPolicy, FallbackPolicy, MailboxPolicy, RestartPolicy
from kvrt.runtime import Runtime
from kvrt.stats import RuntimeStats, WorkerStats


def __getattr__(name: str) -> Any:
    """``kvrt.__version__``, read from the installed package's metadata only when asked for."""
    if name != "__version__":
        raise AttributeError(f"module 'kvrt' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kvrt")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__all__ = [
    "DEFAULT_COLLECTION",
    "CircuitPolicy",
    "CullPolicy",
    "DetachedRuntime",
    "FallbackPolicy",
    "Handle",
    "MailboxPolicy",
    "RestartPolicy",
    "Runtime",
    "RuntimeStats",
    "WorkerStats",
    "open",
]
