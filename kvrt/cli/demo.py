"""``kvrt demo``: the main job, memory and disk workers under load on the embedded defaults."""

from __future__ import annotations

import argparse
import signal
import sys

import anyio

from kvrt.cli.commands import INTERRUPTED, Commands
from kvrt.cli.target import failed
from kvrt.extras import install_hint
from kvrt.stats_server import parse_stats_address


def add_commands(commands: Commands) -> None:
    """Add ``kvrt demo``."""
    demo = commands.add_parser(
        "demo",
        help="run memory and disk workers under load, with TTLs expiring and culled (no server needed)",
        description="Run three memory workers and one disk worker under load for a few seconds, showing each "
        "worker live (as kvrt top does) every second, then a summary, then reopen the disk directory to show "
        "what persisted. Ctrl-C stops early.",
    )
    demo.add_argument("--seconds", type=float, default=5.0, help="how long to run (default 5)")
    demo.add_argument("--callers", type=int, default=48, help="concurrent application tasks (default 48)")
    demo.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio", help="event loop (default asyncio)")
    demo.add_argument("--directory", help="where the disk worker keeps its profiles (default: a temporary directory)")
    demo.add_argument(
        "--stats-address",
        metavar="ADDRESS",
        help="also serve the runtime's stats at ADDRESS (a Unix socket path or a loopback host:port), "
        "for kvrt top ADDRESS",
    )
    demo.add_argument("--verbose", action="store_true", help="also print the workers' lifecycle events")
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; return its exit status."""
    if args.loop not in anyio.get_available_backends():
        print(f"kvrt: --loop {args.loop} needs {args.loop}: {install_hint(args.loop)}", file=sys.stderr)
        return 2
    try:
        if args.stats_address is not None:
            parse_stats_address(args.stats_address)  # a bad address is bad usage, said before any work
        interrupted = anyio.run(_demo, args, backend=args.loop)
    except KeyboardInterrupt:  # Ctrl-C before the demo could listen for it, or while it shut down
        interrupted = True
    except (ValueError, OSError) as error:  # a non-loopback stats address, or one another process serves
        return failed(error)
    if interrupted:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    return 0


async def _demo(args: argparse.Namespace) -> bool:
    """Run the demo; return whether Ctrl-C (or SIGTERM) stopped it early."""
    from kvrt.demo import run_demo  # kvrt.demo draws with kvrt.cli.view: imported once the cli package is

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
        await run_demo(args.seconds, args.callers, args.directory, stop=stop, stats_address=args.stats_address)
        group.cancel_scope.cancel()
    return interrupted
