"""The ``kvrt`` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import anyio

import kvrt
from kvrt.demo import run_demo
from kvrt.extras import install_hint

INTERRUPTED = 130
"""The exit status of a command stopped by Ctrl-C, as shells report it (128 + SIGINT)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kvrt`` command line; return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        print(f"kvrt {kvrt.__version__}")
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.loop not in anyio.get_available_backends():
        print(f"kvrt: --loop {args.loop} needs {args.loop}: {install_hint(args.loop)}", file=sys.stderr)
        return 2
    try:
        interrupted = anyio.run(_demo, args, backend=args.loop)
    except KeyboardInterrupt:  # Ctrl-C before the demo could listen for it, or while it shut down
        interrupted = True
    if interrupted:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvrt", description="kvrt: a runtime for async key-value stores.")
    parser.add_argument("--version", action="version", version=f"kvrt {kvrt.__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run memory and disk workers under load, with TTLs expiring and culled (no server needed)",
        description="Run three memory workers and one disk worker under load for a few seconds, printing what "
        "each does every second, then reopen the disk directory to show what persisted. Ctrl-C stops early.",
    )
    demo.add_argument("--seconds", type=float, default=5.0, help="how long to run (default 5)")
    demo.add_argument("--callers", type=int, default=48, help="concurrent application tasks (default 48)")
    demo.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio", help="event loop (default asyncio)")
    demo.add_argument("--directory", help="where the disk worker keeps its profiles (default: a temporary directory)")
    demo.add_argument("--verbose", action="store_true", help="also print the workers' lifecycle events")
    return parser


async def _demo(args: argparse.Namespace) -> bool:
    """Run the demo; return whether Ctrl-C (or SIGTERM) stopped it early."""
    stop = anyio.Event()
    interrupted = False
    async with anyio.create_task_group() as group:

        async def listen(scope: anyio.CancelScope) -> None:
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    if interrupted:
                        scope.cancel()  # a second Ctrl-C: stop now (the runtime still drains its mailboxes)
                    interrupted = True
                    stop.set()

        group.start_soon(listen, group.cancel_scope)
        await run_demo(args.seconds, args.callers, args.directory, say=_say, stop=stop)
        group.cancel_scope.cancel()
    return interrupted


def _say(line: str) -> None:
    print(line, flush=True)  # each row as it happens, also into a pipe
