"""``kvrt top ADDRESS``: a running runtime's workers, live, from the stats it serves (``Runtime(stats_address=)``)."""

from __future__ import annotations

import argparse
import io
import signal
import sys

import anyio
import msgspec
from rich.console import Console, RenderableType
from rich.measure import Measurement

from kvrt.cli import target
from kvrt.cli.commands import INTERRUPTED, OK, Commands
from kvrt.cli.view import LEGEND, Screen, StatsView, frame_console
from kvrt.stats_server import StatsClient, connect_stats, parse_stats_address


def add_commands(commands: Commands) -> None:
    """Add ``kvrt top``."""
    top = commands.add_parser(
        "top",
        help="show a running runtime's workers live, from its stats address",
        description="Show every worker of a runtime that serves its stats (Runtime(stats_address=...), or "
        "kvrt demo --stats-address): state, circuit, mailbox, in flight, ops/s, latency, batches, restarts, "
        f"culled and errors, redrawn every second until Ctrl-C. {LEGEND}.",
    )
    top.add_argument("address", metavar="ADDRESS", help="the runtime's stats address: a Unix socket path or host:port")
    top.add_argument("--interval", type=_seconds, default=1.0, help="seconds between snapshots (default 1)")
    top.add_argument(
        "--once", action="store_true", help="print one table (two snapshots an interval apart, for ops/s) and exit"
    )
    top.add_argument("--json", action="store_true", help="print one snapshot as a line of JSON and exit")
    top.add_argument("--svg", metavar="FILE", help="as --once, and save the table as an SVG picture in FILE")
    target.add_loop_option(top)
    top.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kvrt top``; return its exit status."""
    return target.run(_top, args)


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


async def _top(args: argparse.Namespace) -> int:
    address = parse_stats_address(args.address)
    title = f"kvrt top {address}"
    async with connect_stats(address) as client:
        if args.json:
            sys.stdout.write(msgspec.json.encode(await client.snapshot()).decode() + "\n")
            return OK
        console = frame_console()
        view = StatsView()
        if args.once or args.svg is not None:
            view.render(await client.snapshot(), title)  # the base the rates are measured from
            await anyio.sleep(args.interval)
            frame = view.render(await client.snapshot(), title)
            console.print(frame)
            if args.svg is not None:
                _save_svg(frame, title, args.svg)
            return OK
        return await _watch(client, view, console, title, args.interval)


def _save_svg(frame: RenderableType, title: str, path: str) -> None:
    """Save ``frame`` as an SVG picture of a terminal as wide as the frame, in colour."""
    picture = Console(record=True, file=io.StringIO(), width=200, force_terminal=True, color_system="truecolor")
    picture.width = min(Measurement.get(picture, picture.options, frame).maximum, 200)
    picture.print(frame)
    picture.save_svg(path, title=title)


async def _watch(client: StatsClient, view: StatsView, console: Console, title: str, interval: float) -> int:
    """Redraw the table every ``interval`` seconds until Ctrl-C (quietly: the last frame stays) or the runtime ends."""
    interrupted = False
    failure: ConnectionError | None = None
    async with anyio.create_task_group() as group:

        async def listen() -> None:
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    interrupted = True
                    group.cancel_scope.cancel()

        group.start_soon(listen)
        try:
            with Screen(console) as screen:
                started = anyio.current_time()
                while True:
                    screen.show(view.render(await client.snapshot(), title))
                    ticks = int((anyio.current_time() - started) / interval) + 1  # a late frame skips, not bunches
                    await anyio.sleep_until(started + ticks * interval)
        except ConnectionError as error:  # the runtime ended, or stopped answering
            failure = error
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return INTERRUPTED if interrupted else OK
