"""kvrt: a runtime for async key-value stores.

Each backend runs as a supervised worker actor that owns its driver; client handles implement the
``AsyncKeyValue`` protocol and send it encoded requests over bounded in-memory streams. Retry,
deadlines, backpressure and TTL culling are how the runtime schedules its workers.
"""

from importlib.metadata import PackageNotFoundError, version

from kvrt.detached import DetachedRuntime, open
from kvrt.entry import DEFAULT_COLLECTION
from kvrt.handle import Handle
from kvrt.policies import CircuitPolicy, CullPolicy, FallbackPolicy, MailboxPolicy, RestartPolicy
from kvrt.runtime import Runtime
from kvrt.stats import RuntimeStats, WorkerStats

try:
    __version__ = version("kvrt")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

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
