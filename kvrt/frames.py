"""Requests as they travel to a worker: msgspec structs, encoded once into a compact frame.

A frame is bytes, so it can cross a thread (and later a process) without sharing a live object.
Requests are a tagged union of array-like structs: the tag and fields encode as a short msgpack
array, and one reusable encoder and decoder serve every handle and worker.
"""

from __future__ import annotations

from typing import Final

import msgspec


class Request(msgspec.Struct, array_like=True, gc=False, tag=True):
    """Fields every request has.

    ``deadline`` is on the ``time.monotonic()`` clock, which every event loop and thread of a
    process shares; ``None`` means the request may wait for as long as it takes.
    """

    deadline: float | None


class Keyed(Request):
    """A request about given keys of one collection: the kind a worker merges into one backend call."""

    collection: str
    keys: list[str]


class Get(Keyed, tag=0):
    """Read ``keys`` of ``collection``; the reply is one encoded entry (or ``None``) per key."""


class Put(Keyed, tag=1):
    """Write ``entries`` under ``keys``; all of one call share ``expires_at`` (epoch seconds or ``None``)."""

    entries: list[bytes]
    expires_at: float | None


class Delete(Keyed, tag=2):
    """Remove ``keys``; the reply is one ``bool`` per key, ``True`` where a live entry was removed."""


class Keys(Request, tag=3):
    """List the live keys of ``collection``, at most ``limit`` of them."""

    collection: str
    limit: int | None


class Collections(Request, tag=4):
    """List collection names, at most ``limit`` of them."""

    limit: int | None


class Destroy(Request, tag=5):
    """Remove everything the backend holds for kvrt."""


class DestroyCollection(Request, tag=6):
    """Remove every entry of ``collection``."""

    collection: str


class Cull(Request, tag=7):
    """Remove every expired entry now (a full pass, unlike the runtime's budgeted background steps)."""


AnyRequest = Get | Put | Delete | Keys | Collections | Destroy | DestroyCollection | Cull
"""Every request a worker understands."""

encode: Final = msgspec.msgpack.Encoder().encode
"""Encode a request into a frame."""

decode: Final = msgspec.msgpack.Decoder(AnyRequest).decode
"""Decode a frame back into its request."""
