"""``kvrt demo``: the main job, memory and disk workers under load on the embedded defaults."""

from __future__ import annotations

import argparse
import signal
import sys

import anyio

from kvrt.cli.commands import INTERRUPTED, Commands
from kvrt.demo import run_demo
from kvrt.extras import install_hint


def add_commands(commands: Commands) -> None:
    """Add ``kvrt demo``."""
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
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; return its exit status."""
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
