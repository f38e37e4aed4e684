"""Optional drivers: each comes with an extra of kvrt's, and a missing one is one clear error naming it.

``pip install kvrt`` brings what the runtime and its embedded defaults need (memory and disk);
network drivers and trio come with extras (``pip install 'kvrt[redis]'``). A backend module imports
its driver inside :func:`needs_extra`, so a user without the extra is told what to install rather
than shown a driver's ``ModuleNotFoundError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kvrt.errors import MissingExtraError


def install_hint(extra: str) -> str:
    """Return the command that installs ``extra``."""
    return f"pip install 'kvrt[{extra}]'"


@contextmanager
def needs_extra(extra: str, what: str) -> Iterator[None]:
    """Turn an ``ImportError`` raised inside into :class:`MissingExtraError` saying ``what`` needs ``extra``."""
    try:
        yield
    except ImportError as exc:
        missing = f" ({exc.name} is not installed)" if exc.name else ""
        message = f"{what} needs the '{extra}' extra{missing}: {install_hint(extra)}"
        raise MissingExtraError(message, name=exc.name) from None
