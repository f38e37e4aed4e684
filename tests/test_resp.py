"""RESP2 as kvrt packs and parses it: every reply type, every split point, redis-py's error classes."""

from __future__ import annotations

from typing import Any

import pytest
import redis.exceptions
from hypothesis import given
from hypothesis import strategies as st

from kvrt.backends.resp import Incomplete, error_of, pack, parse


def test_commands_pack_as_arrays_of_bulk_strings() -> None:
    assert pack([("SET", "k\u00e9", b"\x00v"), ("PX", 1500, 0.5)]) == (
        b"*3\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n\x00v\r\n*3\r\n$2\r\nPX\r\n$4\r\n1500\r\n$3\r\n0.5\r\n"
    )


@pytest.mark.parametrize("argument", [None, True, ["list"], {"a": 1}])
def test_arguments_redis_cannot_take_are_refused_before_anything_is_sent(argument: Any) -> None:
    with pytest.raises(redis.exceptions.DataError):
        pack([("SET", "k", argument)])


@pytest.mark.parametrize(
    ("wire", "reply"),
    [
        (b"+OK\r\n", b"OK"),
        (b":-42\r\n", -42),
        (b"$5\r\nhe\r\nl\r\n", b"he\r\nl"),  # a bulk string is read by its length, CRLF and all
        (b"$0\r\n\r\n", b""),
        (b"$-1\r\n", None),
        (b"*-1\r\n", None),
        (b"*0\r\n", []),
        (b"*3\r\n$1\r\na\r\n$-1\r\n*2\r\n:1\r\n+x\r\n", [b"a", None, [1, b"x"]]),
    ],
)
def test_every_reply_type_parses_and_says_where_the_next_begins(wire: bytes, reply: Any) -> None:
    assert parse(wire + b"+NEXT\r\n", 0) == (reply, len(wire))


def test_error_replies_become_redis_py_exceptions_returned_in_their_place() -> None:
    wire = b"*2\r\n:1\r\n-WRONGTYPE Operation against a key\r\n"
    (first, error), at = parse(wire, 0)
    assert (first, at) == (1, len(wire))
    assert type(error) is redis.exceptions.ResponseError
    assert str(error) == "WRONGTYPE Operation against a key", "an unknown code stays in the message"


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        (b"OOM command not allowed", redis.exceptions.OutOfMemoryError, "command not allowed"),
        (b"LOADING Redis is loading", redis.exceptions.BusyLoadingError, "Redis is loading"),
        (b"READONLY You can't write", redis.exceptions.ReadOnlyError, "You can't write"),
        (b"WRONGPASS invalid username-password pair", redis.exceptions.AuthenticationError, None),
        (b"NOAUTH Authentication required.", redis.exceptions.AuthenticationError, None),
        (b"NOPERM no permissions", redis.exceptions.NoPermissionError, None),
        (b"ERR max number of clients reached", redis.exceptions.ConnectionError, None),
        (b"ERR unknown command 'NOPE'", redis.exceptions.ResponseError, "unknown command 'NOPE'"),
    ],
)
def test_error_codes_name_the_class_redis_py_raises(text: bytes, kind: type[Exception], message: str | None) -> None:
    error = error_of(text)
    assert type(error) is kind
    if message is not None:
        assert str(error) == message


def _arrays(items: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(items, max_size=5)


_replies: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=40), _arrays, max_leaves=20
)


def _wire(reply: Any) -> bytes:
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    return b"*%d\r\n" % len(reply) + b"".join(_wire(item) for item in reply)


@given(st.lists(_replies, min_size=1, max_size=4))
def test_a_buffer_cut_anywhere_is_incomplete_never_a_wrong_reply(replies: list[Any]) -> None:
    wire = b"".join(_wire(reply) for reply in replies)
    first = _wire(replies[0])
    for cut in range(len(first)):
        with pytest.raises(Incomplete):
            parse(wire[:cut], 0)
    at, parsed = 0, []
    while at < len(wire):
        reply, at = parse(wire, at)
        parsed.append(reply)
    assert parsed == replies


def test_a_reply_of_no_known_type_is_a_protocol_error() -> None:
    with pytest.raises(redis.exceptions.InvalidResponse):
        parse(b"?what\r\n", 0)
