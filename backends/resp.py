"""RESP2, the Redis wire protocol: commands packed for one write, replies parsed from a byte buffer.

kvrt's own codec for the connections it speaks on itself (:mod:`kvrt.backends.redis_wire`). Replies
come out as redis-py's parser gives them with decoding off (bytes, ints, lists, ``None``), and an
error reply as the redis-py exception its first word names, so the backend reads both alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.exceptions

_ERRORS: dict[str, type[redis.exceptions.RedisError]] = {
    "ERR": redis.exceptions.ResponseError,
    "WRONGPASS": redis.exceptions.AuthenticationError,
    "NOAUTH": redis.exceptions.AuthenticationError,
    "NOPERM": redis.exceptions.NoPermissionError,
    "OOM": redis.exceptions.OutOfMemoryError,
    "LOADING": redis.exceptions.BusyLoadingError,
    "READONLY": redis.exceptions.ReadOnlyError,
    "MASTERDOWN": redis.exceptions.MasterDownError,
    "TRYAGAIN": redis.exceptions.TryAgainError,
    "CLUSTERDOWN": redis.exceptions.ClusterDownError,
    "NOSCRIPT": redis.exceptions.NoScriptError,
    "EXECABORT": redis.exceptions.ExecAbortError,
}
"""Error codes that redis-py raises as an exception of their own, without the code in the message."""

_ERR_MESSAGES: dict[str, type[redis.exceptions.RedisError]] = {
    "max number of clients reached": redis.exceptions.ConnectionError,
    "invalid password": redis.exceptions.AuthenticationError,
    "Client sent AUTH, but no password is set": redis.exceptions.AuthenticationError,
}
"""``ERR`` replies that redis-py raises as something other than ``ResponseError``."""


class Incomplete(Exception):
    """The buffer ends inside a reply: read more, then parse again from the reply's start."""


def pack(commands: Sequence[tuple[Any, ...]]) -> bytes:
    """Return ``commands`` as one buffer of RESP arrays of bulk strings (str as UTF-8, numbers as text)."""
    parts: list[bytes] = []
    append = parts.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for argument in command:
            if isinstance(argument, bytes):
                data = argument
            elif isinstance(argument, str):
                data = argument.encode()
            elif isinstance(argument, int | float) and not isinstance(argument, bool):
                data = repr(argument).encode()
            else:
                raise redis.exceptions.DataError(f"cannot send a {type(argument).__name__} to Redis")
            append(b"$%d\r\n" % len(data))
            append(data)
            append(b"\r\n")
    return b"".join(parts)


def error_of(line: bytes) -> redis.exceptions.RedisError:
    """Return the exception redis-py gives for an error reply's text (``OOM command not allowed ...``).

    A code redis-py knows names the class and leaves the message; any other (``WRONGTYPE ...``)
    is a ``ResponseError`` with the whole text.
    """
    text = line.decode(errors="replace")
    code, _, message = text.partition(" ")
    kind = _ERRORS.get(code)
    if kind is None:
        return redis.exceptions.ResponseError(text)
    if code == "ERR":
        kind = _ERR_MESSAGES.get(message, kind)
    return kind(message)


def parse(buffer: bytes | bytearray, at: int) -> tuple[Any, int]:
    """Parse the reply starting at ``at``; return it and where the next one starts.

    Raises :class:`Incomplete` if the buffer ends first. An error reply is returned, not raised,
    as an exception object (the caller decides: redis-py raises a lone one, keeps those in arrays).
    """
    end = buffer.find(b"\r\n", at)
    if end < 0:
        raise Incomplete
    kind = buffer[at]
    if kind == 36:  # $ bulk string
        size = int(buffer[at + 1 : end])
        if size < 0:
            return None, end + 2
        start = end + 2
        stop = start + size
        if len(buffer) < stop + 2:
            raise Incomplete
        return bytes(buffer[start:stop]), stop + 2
    if kind == 42:  # * array
        count = int(buffer[at + 1 : end])
        if count < 0:
            return None, end + 2
        items = []
        at = end + 2
        for _ in range(count):
            item, at = parse(buffer, at)
            items.append(item)
        return items, at
    if kind == 58:  # : integer
        return int(buffer[at + 1 : end]), end + 2
    if kind == 43:  # + simple string
        return bytes(buffer[at + 1 : end]), end + 2
    if kind == 45:  # - error
        return error_of(bytes(buffer[at + 1 : end])), end + 2
    raise redis.exceptions.InvalidResponse(f"Protocol error, got {bytes(buffer[at : at + 1])!r} as reply type byte")
