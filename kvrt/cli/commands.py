"""What every ``kvrt`` subcommand shares: its exit statuses and the type it registers its parsers on."""

from __future__ import annotations

import argparse
from typing import TypeAlias

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What ``add_subparsers`` returns: each family of subcommands adds its parsers to it."""

OK = 0
"""Found, or done."""
MISSING = 1
"""The key asked for is not stored (or has expired)."""
USAGE = 2
"""Bad usage or a bad URL, as argparse exits on bad arguments."""
UNAVAILABLE = 3
"""The backend could not be reached, or failed."""
INTERRUPTED = 130
"""The exit status of a command stopped by Ctrl-C, as shells report it (128 + SIGINT)."""


def positive_int(text: str) -> int:
    """Read a count given on the command line: a whole number of at least 1 (argparse says so otherwise)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}")
    return int(text)
