"""The live view of a runtime: its stats snapshots as a table of workers, redrawn each second.

``kvrt top`` draws it from a runtime's stats server, ``kvrt demo`` from its own runtime. In a
terminal the table is redrawn in place (``rich.live.Live``); in a pipe or a file each frame is
printed after the last, as plain text, so a log of it still reads.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Self

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kvrt.stats import WorkerStats
from kvrt.stats_server import StatsSnapshot

LEGEND = (
    "mailbox: requests waiting for the worker / its size; in flight: taken and not yet answered; "
    "mean batch: requests merged into each backend call; culled: expired entries removed in the background"
)
"""What the table's less obvious columns mean."""

_NUMBERS = (
    "mailbox",
    "in\nflight",
    "ops/s",
    "p50\nms",
    "p99\nms",
    "batches",
    "mean\nbatch",
    "restarts",
    "culled",
    "errors",
)
"""The headers of the numeric columns, in order (two lines where one would widen the column)."""
_STATE_STYLES = {"running": "green", "restarting": "yellow", "held_down": "red", "unavailable": "red bold"}
_CIRCUIT_STYLES = {"closed": "green", "half_open": "yellow", "open": "red bold"}


class StatsView:
    """Turns consecutive snapshots into frames of the live table: the previous one gives each ops/s."""

    def __init__(self) -> None:
        self._previous: StatsSnapshot | None = None

    def render(self, snapshot: StatsSnapshot, title: str) -> RenderableType:
        """Return the frame for ``snapshot``: the runtime line headed by ``title``, then a row per worker."""
        previous, self._previous = self._previous, snapshot
        elapsed = snapshot.time - previous.time if previous is not None else 0.0
        rates = {
            name: _rate(worker, previous.workers.get(name), elapsed) if previous is not None else None
            for name, worker in snapshot.workers.items()
        }
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=0)
        table.add_column("worker", style="bold", no_wrap=True)
        table.add_column("state", no_wrap=True)
        table.add_column("circuit", no_wrap=True)
        for header in _NUMBERS:
            table.add_column(header, justify="right", no_wrap=True)
        for name, worker in snapshot.workers.items():
            table.add_row(*_row(name, worker, rates[name]))
        known = [rate for rate in rates.values() if rate is not None]
        total = f"{sum(known):,.0f}" if known else "-"
        runtime = snapshot.runtime
        line = Text.assemble(
            (title, "bold"),
            f"   in flight {runtime.in_flight:,} of {runtime.max_in_flight:,} (peak {runtime.peak_in_flight:,})",
            f"   {len(snapshot.workers)} workers   {total} ops/s",
        )
        return Group(line, table)


def _rate(worker: WorkerStats, before: WorkerStats | None, elapsed: float) -> float | None:
    """Return the requests ``worker`` answered per second since ``before``; None if that cannot be known."""
    if before is None or elapsed <= 0:
        return None
    done = sum(worker.ops.values()) - sum(before.ops.values())
    return done / elapsed if done >= 0 else None  # fewer than before: the name was spawned again


def _row(name: str, worker: WorkerStats, rate: float | None) -> list[RenderableType]:
    waiting = f" +{worker.waiting_for_room:,}" if worker.waiting_for_room else ""
    errors = sum(worker.errors.values())
    latency = worker.latency_ms
    return [
        name,
        Text(worker.state, style=_STATE_STYLES.get(worker.state, "")),
        Text(worker.circuit, style=_CIRCUIT_STYLES.get(worker.circuit, "")),
        f"{worker.mailbox_depth:,}/{worker.mailbox_size:,}{waiting}",
        f"{worker.in_flight:,}",
        "-" if rate is None else f"{rate:,.0f}",
        _ms(latency.get("p50", 0.0)),
        _ms(latency.get("p99", 0.0)),
        f"{worker.batches:,}",
        f"{worker.mean_batch:.1f}",
        f"{worker.restarts:,}",
        f"{worker.culled:,}",
        Text(f"{errors:,}", style="red" if errors else ""),
    ]


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:,.0f}"


def frame_console() -> Console:
    """Return a console for stdout: a terminal's own width; in a pipe or file, which do not wrap, 120 columns."""
    console = Console()
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(width=120)


class Screen:
    """Where frames go: a ``Live`` redrawn in place in a terminal; elsewhere each frame printed in turn."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live = Live(console=console, auto_refresh=False) if console.is_terminal else None

    def __enter__(self) -> Self:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()  # the last frame stays on the screen
            self.console.print()  # and a blank line, as after each frame outside a terminal

    def show(self, frame: RenderableType) -> None:
        """Show ``frame`` in place of the last one (after it, outside a terminal)."""
        if self._live is not None:
            self._live.update(frame, refresh=True)
        else:
            with self.console:  # one write
                self.console.print(frame)
                self.console.print()
