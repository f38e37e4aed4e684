"""The ``kvrt`` command: one module per family of subcommands, each adding its parsers here."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import kvrt
from kvrt.cli import bench, copy, demo, store, top

FAMILIES = (demo, store, copy, top, bench)
"""Every module that adds subcommands: each has ``add_commands(commands)``, whose parsers set ``run``."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kvrt`` command line; return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        print(f"kvrt {kvrt.__version__}")
        parser.print_help()
        return 0
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    status: int = args.run(args)
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvrt", description="kvrt: a runtime for async key-value stores.")
    parser.add_argument("--version", action="version", version=f"kvrt {kvrt.__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    for family in FAMILIES:
        family.add_commands(commands)
    return parser
