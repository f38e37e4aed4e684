"""What a command that works on a store shares: opening its URL, running on a loop, and how a failure is shown.

A failure is one line on stderr, ``kvrt: ErrorName: message``, and an exit status that says what
kind it was (see :mod:`kvrt.cli.commands`). Nothing a URL says of its password reaches the line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio

from kvrt.cli.commands import INTERRUPTED, MISSING, UNAVAILABLE, USAGE
from kvrt.errors import (
    EntryTooLargeError,
    InvalidKeyError,
    InvalidTTLError,
    KeyValueError,
    MissingExtraError,
    MissingKeyError,
    SerializationError,
    ValueTooLargeError,
)
from kvrt.extras import install_hint
from kvrt.handle import Handle
from kvrt.runtime import Runtime
from kvrt.urls import parse_url

Command = Callable[[argparse.Namespace], Awaitable[int]]
"""A subcommand's body: runs on the event loop, returns the exit status."""

_BAD_INPUT = (InvalidKeyError, InvalidTTLError, SerializationError, EntryTooLargeError, ValueTooLargeError)
"""kvrt errors that say the command was given something no store takes: bad usage, not an outage."""


def add_loop_option(parser: argparse.ArgumentParser) -> None:
    """Let a command choose its event loop, as ``kvrt demo`` does."""
    parser.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio", help="event loop (default asyncio)")


def run(command: Command, args: argparse.Namespace) -> int:
    """Run ``command`` on the event loop ``args.loop`` names; return its exit status, or the failure's."""
    loop = getattr(args, "loop", "asyncio")
    secrets = secrets_in(*vars(args).values())
    if loop not in anyio.get_available_backends():
        return failed(MissingExtraError(f"--loop {loop} needs {loop}: {install_hint(loop)}"), secrets)
    try:
        return anyio.run(command, args, backend=loop)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:  # every failure is one line and a status, never a traceback
        return failed(error, secrets)


def status_of(error: BaseException) -> int:
    """Return the exit status that says what kind of failure ``error`` is."""
    if isinstance(error, MissingKeyError):
        return MISSING
    if isinstance(error, (MissingExtraError, *_BAD_INPUT)):
        return USAGE
    if isinstance(error, ValueError | TypeError) and not isinstance(error, KeyValueError):
        return USAGE  # a URL kvrt cannot read, a parameter out of range
    return UNAVAILABLE


def failed(error: BaseException, secrets: Sequence[str] = ()) -> int:
    """Print ``error`` as one line on stderr, with every secret masked; return its exit status."""
    print(f"kvrt: {described(error, secrets)}", file=sys.stderr)
    return status_of(first_of(error))


def described(error: BaseException, secrets: Sequence[str] = ()) -> str:
    """Return ``error`` (a group's first) as one line, its name first, with every secret masked."""
    error = first_of(error)
    line = f"{type(error).__name__}: {' '.join(str(error).split())}"
    for secret in secrets:
        line = line.replace(secret, "***")
    return line


def first_of(error: BaseException) -> BaseException:
    """Return the first error a task group's group holds (a command's tasks fail alike), or ``error``."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def secrets_in(*arguments: object) -> tuple[str, ...]:
    """Return the passwords the URLs among ``arguments`` carry (alone or in lists), as given and decoded."""
    urls = [url for argument in arguments for url in (argument if isinstance(argument, list) else [argument])]
    found: set[str] = set()
    for url in urls:
        if not isinstance(url, str) or "://" not in url:
            continue
        try:
            parts = urlsplit(url)
            password = parts.password
        except ValueError:
            continue
        if password:
            found.add(password)
        found.update(value for name, value in parse_qsl(parts.query) if "password" in name.lower() and value)
    return tuple(sorted(found | {unquote(secret) for secret in found}, key=len, reverse=True))


@asynccontextmanager
async def opened(url: str, runtime: Runtime | None = None) -> AsyncIterator[Handle]:
    """Yield a handle on ``url``'s backend, in ``runtime`` or in a runtime of its own that closes after."""
    backend, options = parse_url(url)
    if runtime is not None:
        yield await runtime.spawn(backend, **options)
        return
    async with Runtime() as own:
        yield await own.spawn(backend, **options)
