"""Backends: the driver calls for each store, and nothing else (no tasks, retries, sleeps or timers).

Importable as ``kvrt.backends``. Each backend module holds one class implementing
:class:`~kvrt.backends.base.Backend`; the runtime's worker actor owns an instance and calls it with
batches of already-encoded entries.
"""

from kvrt.backends.base import Backend, Capabilities

__all__ = ["Backend", "Capabilities"]
