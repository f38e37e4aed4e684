"""``kvrt ping|get|put|delete|ttl|keys|collections|cull|destroy-collection``: one store, reached by its URL.

Each command opens the URL's backend in a runtime of its own, does one thing, and prints JSON on
stdout: a document, one document per line for a listing, or a small result naming what was done
(``{"deleted": true, "key": ...}``), so it pipes into ``jq``. A key that is not stored is exit
status 1 with ``MissingKeyError`` on stderr and nothing on stdout; see :mod:`kvrt.cli.commands`
for the others. A command the backend cannot do (``keys`` on memcached, which cannot list) is
bad usage, status 2 as for a bad URL: trying again later cannot help, unlike an outage (3).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from functools import partial
from typing import Any, TypeVar

import msgspec

from kvrt.cli.commands import OK, Commands
from kvrt.cli.target import Command, add_loop_option, opened, run
from kvrt.errors import MissingKeyError, SerializationError
from kvrt.handle import CollectionsSegment, CullSegment, DestroyCollectionSegment, Handle, KeysSegment
from kvrt.urls import redacted

PROBE_KEY = "kvrt-ping"
"""The key ``kvrt ping`` reads (never writes): one request's round trip proves the store answers."""

_S = TypeVar("_S", bound=Handle)
_encoder = msgspec.json.Encoder()
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


class UnsupportedCommandError(TypeError):
    """The URL's backend has no segment for this command (``keys`` on memcached): bad usage, not an outage."""


class NotConfirmedError(ValueError):
    """A destructive command was not confirmed (``--yes``, or ``y`` at the terminal's prompt)."""


def add_commands(commands: Commands) -> None:
    """Add the store commands: ping, get, put, delete, ttl, keys, collections, cull, destroy-collection."""
    _add(commands, "ping", _ping)
    _key_options(_add(commands, "get", _get))
    put = _add(commands, "put", _put)
    put.add_argument("key", metavar="KEY")
    put.add_argument("json", metavar="JSON", help="a JSON object, or - to read it from stdin")
    _collection_option(put)
    put.add_argument("--ttl", type=float, metavar="S", help="expire the entry S seconds from now (default: never)")
    _key_options(_add(commands, "delete", _delete))
    _key_options(_add(commands, "ttl", _ttl))
    keys = _add(commands, "keys", _keys)
    _collection_option(keys)
    _limit_option(keys)
    _limit_option(_add(commands, "collections", _collections))
    _add(commands, "cull", _cull)
    destroy = _add(commands, "destroy-collection", _destroy_collection)
    destroy.add_argument("collection", metavar="COLLECTION")
    destroy.add_argument("--yes", action="store_true", help="do not ask (needed when stdin is not a terminal)")


def _add(commands: Commands, name: str, body: Command) -> argparse.ArgumentParser:
    """Add the command ``name``, described by its body's docstring (its first line is the summary)."""
    description = " ".join((body.__doc__ or "").split())
    summary = (body.__doc__ or "").split("\n", 1)[0].rstrip(".")
    parser = commands.add_parser(name, help=summary[0].lower() + summary[1:], description=description)
    parser.add_argument("url", metavar="URL", help="the store, as kvrt.open takes it (memory://, disk:///dir, ...)")
    add_loop_option(parser)
    parser.set_defaults(run=partial(run, body))
    return parser


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY")
    _collection_option(parser)


def _collection_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--collection", help="the collection (default: the URL's default collection)")


def _limit_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=_count, metavar="N", help="list at most N (default: all)")


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


async def _ping(args: argparse.Namespace) -> int:
    """Check that a store answers.

    Open the URL's store, read one key, and print {"reached": true, "url": ..., "seconds": the read's round trip}.
    """
    async with opened(args.url) as handle:
        start = time.perf_counter()
        await handle.get(PROBE_KEY)
        seconds = time.perf_counter() - start
    _emit({"reached": True, "url": redacted(args.url), "seconds": round(seconds, 6)})
    return OK


async def _get(args: argparse.Namespace) -> int:
    """Print the JSON object stored under KEY.

    Exit 1 (MissingKeyError on stderr, nothing on stdout) if it is not stored or has expired.
    """
    async with opened(args.url) as handle:
        value = await handle.get(args.key, collection=args.collection)
    if value is None:
        raise _missing(handle, args)
    _emit(value)
    return OK


async def _put(args: argparse.Namespace) -> int:
    """Store a JSON object under KEY, replacing what was there.

    JSON is the object itself, or - to read it from stdin. Prints {"stored": true, "key": ..., "ttl": ...}.
    """
    value = _value(args.json)  # before the store is opened: bad input never reaches it
    async with opened(args.url) as handle:
        await handle.put(args.key, value, collection=args.collection, ttl=args.ttl)
    _emit({"stored": True, "key": args.key, "ttl": args.ttl})
    return OK


async def _delete(args: argparse.Namespace) -> int:
    """Remove KEY.

    Prints {"deleted": true, "key": ...}; exit 1 (MissingKeyError) if it was not stored.
    """
    async with opened(args.url) as handle:
        removed = await handle.delete(args.key, collection=args.collection)
    if not removed:
        raise _missing(handle, args)
    _emit({"deleted": True, "key": args.key})
    return OK


async def _ttl(args: argparse.Namespace) -> int:
    """Print a key's value and the seconds it has left.

    Prints {"value": ..., "ttl": seconds, or null if it never expires}; exit 1 if KEY is not stored.
    """
    async with opened(args.url) as handle:
        value, seconds = await handle.ttl(args.key, collection=args.collection)
    if value is None:
        raise _missing(handle, args)
    _emit({"value": value, "ttl": None if seconds is None else round(seconds, 3)})
    return OK


async def _keys(args: argparse.Namespace) -> int:
    """List the live keys of a collection, one JSON string a line.

    (jq -r . prints them bare.)
    """
    async with opened(args.url) as handle:
        names = await _having(handle, KeysSegment, "list keys").keys(args.collection, limit=args.limit)
    _emit_lines(names)
    return OK


async def _collections(args: argparse.Namespace) -> int:
    """List the collections that hold entries, one JSON string a line."""
    async with opened(args.url) as handle:
        names = await _having(handle, CollectionsSegment, "list collections").collections(limit=args.limit)
    _emit_lines(names)
    return OK


async def _cull(args: argparse.Namespace) -> int:
    """Remove every expired entry now.

    A runtime also culls in the background; stores that expire entries themselves (Redis) have no cull.
    Prints {"culled": true}.
    """
    async with opened(args.url) as handle:
        await _having(handle, CullSegment, "cull (its store expires entries itself)").cull()
    _emit({"culled": True})
    return OK


async def _destroy_collection(args: argparse.Namespace) -> int:
    """Remove every entry of COLLECTION.

    Asks on the terminal first, unless --yes; without a terminal to ask on, --yes is needed.
    Prints {"destroyed": whether anything was removed, "collection": ...}.
    """
    _confirm(f"Destroy every entry of collection {args.collection!r} in {redacted(args.url)}?", args.yes)
    async with opened(args.url) as handle:
        segment = _having(handle, DestroyCollectionSegment, "destroy a collection")
        removed = await segment.destroy_collection(args.collection)
    _emit({"destroyed": removed, "collection": args.collection})
    return OK


def _having(handle: Handle, segment: type[_S], what: str) -> _S:
    """Return ``handle`` as the segment a command needs, or say plainly that its backend cannot ``what``."""
    if not isinstance(handle, segment):
        raise UnsupportedCommandError(f"the {handle.name} backend cannot {what}")
    return handle


def _missing(handle: Handle, args: argparse.Namespace) -> MissingKeyError:
    return MissingKeyError(
        "The key is not stored, or has expired.", backend=handle.name, collection=args.collection, key=args.key
    )


def _value(given: str) -> dict[str, Any]:
    """Return the JSON object ``given`` (or stdin's, for ``-``); anything else is refused, without echoing it."""
    try:
        raw: str | bytes = sys.stdin.buffer.read() if given == "-" else given
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeEncodeError) as exc:
        raise SerializationError(f"The value is not JSON: {exc}") from None
    if not isinstance(value, dict):
        kind = "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)
        raise SerializationError(
            f"The value must be a JSON object ({{...}}), as a store keeps under a key; not {kind}."
        )
    return value


def _confirm(question: str, yes: bool) -> None:
    """Return if confirmed (``--yes``, or ``y`` at the terminal); else raise :class:`NotConfirmedError`."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise NotConfirmedError("Nothing destroyed: confirm with --yes (stdin is not a terminal to ask on).")
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)  # stdout carries only JSON
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise NotConfirmedError("Nothing destroyed: not confirmed.")


def _emit(document: object) -> None:
    _emit_lines([document])


def _emit_lines(documents: Iterable[object]) -> None:
    """Write each document as one line of JSON (UTF-8, non-ASCII as it is), as ``jq`` reads a stream."""
    out = sys.stdout.buffer
    for document in documents:
        out.write(_encoder.encode(document) + b"\n")
    out.flush()
