"""Draw the charts bench/RESULTS.md embeds from the tables recorded in it, without running a bench.

    python bench/plot_results.py                 # bench/RESULTS.md -> bench/plots/*.png

- ``ratios.png``: kvrt's ops/s over the reference's, per backend, at 1 and at 64 callers, puts and
  gets (every "X: kvrt vs ..." section).
- ``stalls.png``: the host loop's worst stall at 64 callers, kvrt against the reference (the
  median over the rounds where a section gives "median / max").
- ``scale-asyncio.png``, ``scale-trio.png``: the scaling sections, ops/s against callers for each
  count of workers.
- ``bench/``: the charts of ``kvrt bench``, redrawn from the ``results.json`` that bench/regenerate.py
  recorded there (kvrt.plots draws both).

bench/regenerate.py runs this after the benches (or alone, with ``--plots-only``).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from kvrt import plots
from kvrt.workload import Results

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.typing import LineStyleType

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
OUT = HERE / "plots"
BENCH = "bench"
"""The folder of ``OUT`` holding the ``kvrt bench`` example: its results.json and its charts."""

_COMPARISON = re.compile(r"^(?P<backend>[^:]+): kvrt vs .+, (?P<loop>asyncio|trio)$")
_SCALING = re.compile(r"^Scaling, (?P<loop>asyncio|trio)$")
_OPS = {"put": "tab:blue", "get": "tab:green"}
_SCALE_SUBJECTS: dict[str, tuple[str, LineStyleType]] = {
    "floor": ("tab:gray", "--"),
    "batched floor": ("tab:gray", ":"),
    "memory": ("tab:blue", "-"),
    "disk": ("tab:green", "-"),
    "redis": ("tab:red", "-"),
    "raw redis-py": ("black", "-."),
}


@dataclass
class Table:
    headers: list[str]
    rows: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Section:
    title: str
    tables: list[Table] = field(default_factory=list)


@dataclass
class Comparison:
    """One "X: kvrt vs the reference" section: by (callers, op), the ratio and the two worst stalls (ms)."""

    backend: str
    ratio: dict[tuple[int, str], float]
    kvrt_stall: dict[tuple[int, str], float]
    reference_stall: dict[tuple[int, str], float]


def sections(text: str) -> list[Section]:
    """Return the ``## `` sections of a RESULTS.md, each with its markdown tables."""
    found: list[Section] = []
    table: Table | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            found.append(Section(line[3:].strip()))
            table = None
        elif found and line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if table is None:
                table = Table(cells)
                found[-1].tables.append(table)
            elif not all(set(cell) <= set("-: ") for cell in cells):
                table.rows.append(dict(zip(table.headers, cells, strict=False)))
        else:
            table = None
    return found


def number(cell: str) -> float | None:
    """Return the first figure of ``cell`` ("53,743", "1.62x", "4.20 / 10.45 ms", "1.08 ms"), or None ("—")."""
    match = re.match(r"\s*([\d,]+(?:\.\d+)?)", cell)
    return float(match[1].replace(",", "")) if match else None


def comparisons(found: list[Section]) -> list[Comparison]:
    """Return every section that sets kvrt against the reference, in RESULTS.md's order."""
    result = []
    for section in found:
        match = _COMPARISON.match(section.title)
        if not match or not section.tables or "reference ops/s" not in section.tables[0].headers:
            continue
        table = section.tables[0]
        stall = {
            name: next(h for h in table.headers if h.startswith(f"{name} worst stall"))
            for name in ("kvrt", "reference")
        }
        comparison = Comparison(
            backend=match["backend"] + ("" if match["loop"] == "asyncio" else f" ({match['loop']})"),
            ratio={},
            kvrt_stall={},
            reference_stall={},
        )
        for row in table.rows:
            key = (int(row["callers"].replace(",", "")), row["op"])
            for into, column in (
                (comparison.ratio, "ratio"),
                (comparison.kvrt_stall, stall["kvrt"]),
                (comparison.reference_stall, stall["reference"]),
            ):
                value = number(row[column])
                if value is not None:
                    into[key] = value
        result.append(comparison)
    return result


def scaling(found: list[Section]) -> dict[str, Table]:
    """Return the scaling sections' tables, by loop."""
    return {m["loop"]: s.tables[0] for s in found if (m := _SCALING.match(s.title)) and s.tables}


def draw_ratios(found: list[Comparison], out: Path) -> Path:
    chart, axes = plots.figure(1, 2, width=6.0, height=0.42 * len(found) + 1.2)
    for panel, callers in zip(axes[0], (1, 64), strict=True):
        rows = [c for c in found if (callers, "put") in c.ratio]
        bars = {}
        for op, colour in _OPS.items():
            values = [c.ratio.get((callers, op), 0.0) for c in rows]
            bars[f"{op}s"] = (colour, values, [f"{v:.2f}x" for v in values])
        _paired_bars(
            panel,
            [c.backend for c in rows],
            bars,
            ticks={tick: f"{tick:g}x" for tick in (0.1, 0.3, 1, 3, 10, 30, 100)},
            xlim=(0.08, 150),
            xlabel="kvrt ops/s ÷ reference ops/s (log; right of 1 = kvrt faster)",
            heading=f"{callers} caller{'s' if callers > 1 else ''}",
        )
        panel.axvline(1.0, color="black", linewidth=1)
    chart.suptitle("kvrt vs py-key-value-aio, same process and event loop (bench/RESULTS.md)", fontsize=12)
    plots.legend(chart, plots.key({f"{op}s": colour for op, colour in _OPS.items()}, {}))
    return plots.save(chart, out / "ratios.png")


def draw_stalls(found: list[Comparison], out: Path) -> Path:
    chart, axes = plots.figure(1, 2, width=6.0, height=0.42 * len(found) + 1.2)
    for panel, op in zip(axes[0], _OPS, strict=True):
        rows = [c for c in found if (64, op) in c.kvrt_stall]
        bars = {}
        for name, colour, column in (
            ("kvrt", "tab:blue", "kvrt_stall"),
            ("reference", "tab:orange", "reference_stall"),
        ):
            values = [max(getattr(c, column)[(64, op)], 0.01) for c in rows]
            bars[name] = (colour, values, [f"{v:,.1f}" for v in values])
        _paired_bars(
            panel,
            [c.backend for c in rows],
            bars,
            ticks={tick: f"{tick:,} ms" for tick in (1, 10, 100, 1_000, 10_000)},
            xlim=(0.3, 60_000),
            xlabel="worst stall of the host loop (log)",
            heading=f"64 callers, {op}s",
        )
    chart.suptitle("How late a task sleeping 1 ms woke while each ran (bench/RESULTS.md)", fontsize=12)
    plots.legend(chart, plots.key({"kvrt": "tab:blue", "reference": "tab:orange"}, {}))
    return plots.save(chart, out / "stalls.png")


def _paired_bars(
    panel: Axes,
    labels: list[str],
    bars: dict[str, tuple[str, list[float], list[str]]],
    *,
    ticks: dict[float, str],
    xlim: tuple[float, float],
    xlabel: str,
    heading: str,
) -> None:
    """Draw two horizontal bars per label (name -> colour, values, texts) on a log x axis."""
    positions = list(range(len(labels)))
    for offset, (name, (colour, values, texts)) in zip((-0.2, 0.2), bars.items(), strict=True):
        drawn = panel.barh([p + offset for p in positions], values, height=0.4, color=colour, label=name)
        plots.annotate_bars(panel, drawn, texts)
    panel.set_xscale("log")
    panel.set_xlim(*xlim)
    panel.set_xticks(list(ticks), list(ticks.values()))
    panel.set_yticks(positions, labels)
    panel.invert_yaxis()
    panel.set_xlabel(xlabel)
    panel.set_title(heading, fontsize=11)
    panel.grid(True, axis="x", alpha=0.3)


def draw_scaling(loop: str, table: Table, out: Path) -> Path:
    workers = sorted({int(row["workers"].replace(",", "")) for row in table.rows})
    subjects = {name: style for name, style in _SCALE_SUBJECTS.items() if name in table.headers}
    chart, axes = plots.figure(2, len(workers), width=4.6, height=3.4)
    for row_index, op in enumerate(_OPS):
        for panel, count in zip(axes[row_index], workers, strict=True):
            rows = [r for r in table.rows if r["op"] == op and int(r["workers"].replace(",", "")) == count]
            callers = [int(r["callers"].replace(",", "")) for r in rows]
            for name, (colour, style) in subjects.items():
                points = [(c, v) for c, r in zip(callers, rows, strict=True) if (v := number(r[name])) is not None]
                if points:
                    xs, ys = zip(*points, strict=True)
                    panel.plot(xs, ys, color=colour, linestyle=style, marker="o", markersize=4)
            plots.log_axis(panel, engineering=True)
            plots.callers_axis(panel, callers)
            panel.set_ylabel(f"{op}s per second")
            panel.set_title(f"{count} worker{'s' if count > 1 else ''}, {op}s", fontsize=10)
    chart.suptitle(f"Scaling, {loop}: ops/s against callers, for 1, 16 and 100 workers (bench/RESULTS.md)")
    plots.legend(chart, [(name, colour, style) for name, (colour, style) in subjects.items()])
    return plots.save(chart, out / f"scale-{loop}.png")


def redraw_bench(out: Path) -> list[Path]:
    """Redraw the ``kvrt bench`` example's charts from its recorded results.json, if there is one."""
    recorded = out / BENCH / "results.json"
    if not recorded.exists():
        return []
    return plots.draw(msgspec.json.decode(recorded.read_bytes(), type=Results), out / BENCH)


def draw_all(results: Path = RESULTS, out: Path = OUT) -> list[Path]:
    """Draw every chart from ``results`` (a RESULTS.md) into ``out``; return the paths written."""
    found = sections(results.read_text())
    compared = comparisons(found)
    written = [draw_ratios(compared, out), draw_stalls(compared, out)]
    written += [draw_scaling(loop, table, out) for loop, table in scaling(found).items()]
    return written + redraw_bench(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw bench/RESULTS.md's charts from its recorded tables.")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the RESULTS.md to read (bench/RESULTS.md)")
    parser.add_argument("--out", type=Path, default=OUT, help="where the PNGs go (bench/plots)")
    args = parser.parse_args(argv)
    for path in draw_all(args.results, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
