"""Charts of what ``kvrt bench`` measured, drawn by matplotlib (the ``plots`` extra) on its Agg canvas.

Figures are built as :class:`matplotlib.figure.Figure` objects and saved through the non-interactive
Agg canvas, never through ``pyplot``: drawing a PNG changes no global matplotlib state in the
process that asked for it (a notebook keeps its own backend). bench/plot_results.py draws the
figures bench/RESULTS.md embeds with the same helpers, so every chart kvrt makes looks alike.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvrt.extras import needs_extra
from kvrt.workload import Measured, Results, Run

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import LineStyleType

SUBJECT_COLOURS: dict[str, str] = {"kvrt": "tab:blue", "reference": "tab:orange", "raw": "tab:gray"}
"""One colour per subject, the same in every chart."""
OP_STYLES: dict[str, LineStyleType] = {"put": "-", "get": "--"}
"""One line style per operation."""
FILES = ("throughput.png", "latency.png", "stall.png")
"""What :func:`draw` writes, in its order."""

_PANELS_PER_ROW = 3


def figure(rows: int, columns: int, *, width: float = 4.6, height: float = 3.4) -> tuple[Figure, list[list[Axes]]]:
    """Return a new figure of ``rows`` x ``columns`` panels (each ``width`` x ``height`` inches) and its axes."""
    with needs_extra("plots", "drawing PNGs"):
        from matplotlib.figure import Figure
    chart = Figure(figsize=(width * columns, height * rows + 0.6), layout="constrained")
    axes = chart.subplots(rows, columns, squeeze=False)
    return chart, [list(row) for row in axes]


def save(chart: Figure, path: Path) -> Path:
    """Write ``chart`` to ``path`` as a PNG through the Agg canvas; return ``path``."""
    with needs_extra("plots", "drawing PNGs"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(chart)
    path.parent.mkdir(parents=True, exist_ok=True)
    chart.savefig(
        path, dpi=100, format="png", metadata={"Software": None}
    )  # no version: a redraw of the same data is the same file
    return path


def legend(chart: Figure, entries: Sequence[tuple[str, str, LineStyleType]]) -> None:
    """Put one legend below the panels: a line of each entry's colour and style, labelled."""
    with needs_extra("plots", "drawing PNGs"):
        from matplotlib.lines import Line2D
    handles = [
        Line2D([], [], color=colour, linestyle=style, linewidth=2, label=label) for label, colour, style in entries
    ]
    chart.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)


def key(colours: dict[str, str], styles: dict[str, LineStyleType]) -> list[tuple[str, str, LineStyleType]]:
    """Return legend entries saying what each colour and then each line style stands for."""
    return [(label, colour, "-") for label, colour in colours.items()] + [
        (label, "black", style) for label, style in styles.items()
    ]


def callers_axis(axes: Axes, callers: Sequence[int]) -> None:
    """Make ``axes``' x axis the callers, doubling to the right, ticked at the counts measured."""
    with needs_extra("plots", "drawing PNGs"):
        from matplotlib.ticker import NullLocator
    axes.set_xscale("log", base=2)
    axes.set_xticks(list(callers), [f"{count:,}" for count in callers])
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xlabel("concurrent callers")
    axes.grid(True, which="major", alpha=0.3)


def log_axis(axes: Axes, *, engineering: bool = False) -> None:
    """Make ``axes``' y axis logarithmic, ticked at 1, 2 and 5 of each decade (20k, 1M with ``engineering``).

    A log axis keeps a 50x gap and a 1.2x one readable in one panel; three ticks a decade give a
    narrow range labels too.
    """
    with needs_extra("plots", "drawing PNGs"):
        from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_minor_formatter(NullFormatter())
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axes.yaxis.set_major_formatter(EngFormatter(sep="") if engineering else plain)


def title(text: str, width: int = 42) -> str:
    """Return ``text`` wrapped to lines of ``width``: a long URL as a panel's title stays inside the panel."""
    return "\n".join(textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False)) or text


def draw(results: Results, out: Path) -> list[Path]:
    """Write the throughput, latency and stall charts of ``results`` into ``out``; return their paths."""
    backends = list(dict.fromkeys(measured.backend for measured in results.measured))
    if not backends:
        return []  # nothing was measured: no chart to draw
    by_backend = {backend: [m for m in results.measured if m.backend == backend] for backend in backends}
    charts = (_throughput(by_backend, results), _latency(by_backend, results), _stall(by_backend, results))
    return [save(chart, out / name) for chart, name in zip(charts, FILES, strict=True)]


def _grid(count: int, rows_each: int = 1) -> tuple[Figure, list[list[Axes]]]:
    columns = min(count, _PANELS_PER_ROW)
    chart, axes = figure(rows_each * math.ceil(count / columns), columns)
    for index in range(count, len(axes[0]) * math.ceil(count / columns)):
        for row in range(rows_each):
            axes[(index // columns) * rows_each + row][index % columns].set_visible(False)
    return chart, axes


def _panel(axes: list[list[Axes]], index: int, row: int = 0, rows_each: int = 1) -> Axes:
    return axes[(index // _PANELS_PER_ROW) * rows_each + row][index % _PANELS_PER_ROW]


def _series(measured: Iterable[Measured], subject: str, op: str) -> list[Measured]:
    return sorted((m for m in measured if m.subject == subject and m.run.op == op), key=lambda m: m.run.callers)


def _subjects(by_backend: dict[str, list[Measured]]) -> dict[str, str]:
    present = {m.subject for measured in by_backend.values() for m in measured}
    return {subject: colour for subject, colour in SUBJECT_COLOURS.items() if subject in present}


def _header(chart: Figure, what: str, results: Results) -> None:
    chart.suptitle(f"{what} (kvrt {results.kvrt}, {results.loop}, {results.keys:,} keys per run)", fontsize=12)


def _throughput(by_backend: dict[str, list[Measured]], results: Results) -> Figure:
    return _ops_chart(
        by_backend,
        results,
        lambda run: run.ops_per_second,
        ylabel="operations per second",
        heading="Throughput: kvrt vs the reference's store vs the raw driver",
        engineering=True,
    )


def _latency(by_backend: dict[str, list[Measured]], results: Results) -> Figure:
    rows_each = len(OP_STYLES)
    chart, axes = _grid(len(by_backend), rows_each)
    for index, (backend, measured) in enumerate(by_backend.items()):
        for row, op in enumerate(OP_STYLES):
            panel = _panel(axes, index, row, rows_each)
            for subject, colour in _subjects(by_backend).items():
                series = _series(measured, subject, op)
                if series:
                    xs = [m.run.callers for m in series]
                    p50 = [m.run.latency_ms["p50"] for m in series]
                    p99 = [m.run.latency_ms["p99"] for m in series]
                    panel.plot(xs, p50, color=colour, linestyle="-", marker="o", markersize=4)
                    panel.plot(xs, p99, color=colour, linestyle=":", marker="v", markersize=4)
            log_axis(panel)
            callers_axis(panel, sorted({m.run.callers for m in measured}))
            panel.set_ylabel(f"{op} latency (ms)")
            panel.set_title(title(f"{backend} ({op}s)"), fontsize=10)
    _header(chart, "Latency per call, as callers see it", results)
    legend(chart, key(_subjects(by_backend), {"p50": "-", "p99": ":"}))
    return chart


def _plot_ops(panel: Axes, measured: list[Measured], subjects: dict[str, str], figure: Callable[[Run], float]) -> None:
    """Draw ``figure`` of each subject's runs against callers, a line per op in its style."""
    for subject, colour in subjects.items():
        for op, style in OP_STYLES.items():
            series = _series(measured, subject, op)
            if series:
                xs = [m.run.callers for m in series]
                panel.plot(xs, [figure(m.run) for m in series], color=colour, linestyle=style, marker="o", markersize=4)


def _stall(by_backend: dict[str, list[Measured]], results: Results) -> Figure:
    return _ops_chart(
        by_backend,
        results,
        lambda run: max(run.worst_stall_ms, 0.01),  # log: no zero
        ylabel="worst host-loop stall (ms)",
        heading="Host loop's worst stall: how late a task sleeping 1 ms woke",
        floor=max(results.idle_stall_ms, 0.01),
    )


def _ops_chart(
    by_backend: dict[str, list[Measured]],
    results: Results,
    figure: Callable[[Run], float],
    *,
    ylabel: str,
    heading: str,
    engineering: bool = False,
    floor: float | None = None,
) -> Figure:
    """Draw a panel per backend of ``figure`` against callers, a line per subject and op, over ``floor``."""
    chart, axes = _grid(len(by_backend))
    for index, (backend, measured) in enumerate(by_backend.items()):
        panel = _panel(axes, index)
        _plot_ops(panel, measured, _subjects(by_backend), figure)
        if floor is not None:
            panel.axhline(floor, color="black", linestyle=(0, (1, 3)), linewidth=1)
            panel.annotate(
                "idle loop", (0.99, floor), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=8
            )
        log_axis(panel, engineering=engineering)
        callers_axis(panel, sorted({m.run.callers for m in measured}))
        panel.set_ylabel(ylabel)
        panel.set_title(title(backend), fontsize=10)
    _header(chart, heading, results)
    legend(chart, key(_subjects(by_backend), OP_STYLES))
    return chart


def annotate_bars(axes: Axes, bars: Any, texts: Sequence[str]) -> None:
    """Write ``texts`` at the end of each of ``bars`` (a horizontal bar chart's figures, readable at a glance)."""
    axes.bar_label(bars, labels=list(texts), padding=3, fontsize=8)
