"""The ``kvrt`` command."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import anyio

from kvrt.demo import run_demo


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kvrt`` command line."""
    parser = argparse.ArgumentParser(prog="kvrt", description="kvrt: a runtime for async key-value stores.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run memory-backed workers under load, with TTLs expiring and culled")
    demo.add_argument("--seconds", type=float, default=5.0, help="how long to run (default 5)")
    demo.add_argument("--callers", type=int, default=48, help="concurrent application tasks (default 48)")
    demo.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio", help="event loop (default asyncio)")
    demo.add_argument("--directory", help="where the disk worker keeps its profiles (default: a temporary directory)")
    demo.add_argument("--verbose", action="store_true", help="also print the workers' lifecycle events")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    anyio.run(run_demo, args.seconds, args.callers, args.directory, backend=args.loop)
    return 0
