"""``kvrt copy SRC_URL DST_URL``: every entry of one store into another, with its remaining TTL.

A progress bar on stderr while it runs; at the end the summary, as one JSON line on stdout and one
line for people on stderr. Ctrl-C stops after the batch in flight (a second one at once): the
partial summary is printed and the status is 130; running the same command again completes it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from kvrt.cli.commands import INTERRUPTED, OK, Commands, positive_int
from kvrt.cli.target import add_loop_option, opened, run
from kvrt.transfer import DEFAULT_BATCH, CopySummary, copy
from kvrt.urls import redacted


def add_commands(commands: Commands) -> None:
    """Add ``kvrt copy``."""
    parser = commands.add_parser(
        "copy",
        help="copy every entry, with its remaining TTL, from one store to another",
        description="Copy the live entries of SRC_URL's collections (all it lists, or those named with -c) into "
        "DST_URL, in batches, each entry with the time it has left. Re-running completes an interrupted copy "
        "(puts replace). Prints the summary as one JSON line on stdout.",
    )
    parser.add_argument("source", metavar="SRC_URL", help="the store to read (it must list its keys)")
    parser.add_argument("destination", metavar="DST_URL", help="the store to write")
    parser.add_argument(
        "-c",
        "--collection",
        dest="collections",
        action="extend",
        nargs="+",
        metavar="COLLECTION",
        help="copy only these collections (default: every collection the source lists)",
    )
    parser.add_argument(
        "--batch",
        type=positive_int,
        default=DEFAULT_BATCH,
        help=f"entries per read and write (default {DEFAULT_BATCH})",
    )
    parser.add_argument("--verbose", action="store_true", help="add the process's memory to the summary; log events")
    add_loop_option(parser)
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    """Run the copy on ``--loop``; return its exit status."""
    return run(_copy, args)


async def _copy(args: argparse.Namespace) -> int:
    if args.source == args.destination:
        raise ValueError("the source and the destination are the same URL")
    memory_at_start = _resident() if args.verbose else None
    summary = CopySummary()
    stop = anyio.Event()
    error: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(_listen, stop, summary, group.cancel_scope)
        try:
            async with opened(args.source) as source, opened(args.destination) as destination:
                with _progress_bar() as show:
                    await copy(
                        source,
                        destination,
                        args.collections,
                        batch=args.batch,
                        progress=show,
                        stop=stop,
                        summary=summary,
                    )
        except Exception as exc:  # kept for run() to print, once the partial summary is out
            error = exc
        finally:
            group.cancel_scope.cancel()
    _print_summary(args, summary, memory_at_start)
    if error is not None:
        raise error
    return INTERRUPTED if summary.interrupted else OK


async def _listen(stop: anyio.Event, summary: CopySummary, scope: anyio.CancelScope) -> None:
    """Stop the copy after its batch in flight at the first Ctrl-C (or SIGTERM), at once at a second."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            summary.interrupted = True
            if stop.is_set():
                scope.cancel()
            stop.set()


class _RateColumn(ProgressColumn):
    """Entries per second, as rich measures the task's speed."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} entries/s", style="progress.data.speed")


@contextmanager
def _progress_bar() -> Iterator[Callable[[CopySummary], None]]:
    """Show a bar on stderr for the copy; yield what the copy calls with its summary."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task = progress.add_task("listing", total=None)

    current: str | None = None
    ordinal = 0

    def show(summary: CopySummary) -> None:
        nonlocal current, ordinal
        if summary.collection != current:
            current, ordinal = summary.collection, ordinal + 1
            progress.update(task, description=f"{current} ({ordinal}/{len(summary.collections)})")
        progress.update(task, total=summary.listed, completed=summary.done)

    with progress:
        yield show


def _print_summary(args: argparse.Namespace, summary: CopySummary, memory_at_start: int | None) -> None:
    source, destination = redacted(args.source), redacted(args.destination)
    document: dict[str, Any] = {"source": source, "destination": destination, **summary.as_json()}
    if memory_at_start is not None:
        document["process"] = {"rss_at_start": memory_at_start, "peak_rss": _peak_resident()}
    print(json.dumps(document, ensure_ascii=False), flush=True)
    rate = summary.copied / summary.seconds if summary.seconds > 0 else 0.0
    line = (
        f"kvrt copy: {summary.copied:,} of {summary.listed:,} listed entries copied from {source} to {destination} "
        f"in {summary.seconds:.1f} s ({rate:,.0f}/s); {summary.expired:,} expired meanwhile, {summary.failed:,} failed"
    )
    if summary.errors:
        line += " (" + ", ".join(f"{name}: {count:,}" for name, count in sorted(summary.errors.items())) + ")"
    if summary.interrupted:
        line += "; interrupted: run it again to complete the copy"
    print(line, file=sys.stderr, flush=True)


def _resident() -> int | None:
    """Return this process's resident memory now, in bytes (``None`` where the system does not say)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return _peak_resident()  # elsewhere, the peak so far is the closest figure there is


def _peak_resident() -> int | None:
    """Return the most resident memory this process has held, in bytes (``None`` where the system does not say).

    Linux's ``VmHWM`` first: ``getrusage``'s peak survives ``exec``, so a process started from a
    larger one (``subprocess`` forks its parent) would report its parent's size as its own peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux kilobytes
