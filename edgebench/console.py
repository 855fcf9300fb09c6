"""The command line's two consoles (stdout for results, stderr for progress, warnings and errors) and its
number format, shared by edgebench.cli and the subcommand modules."""
from __future__ import annotations

import sys

from rich.console import Console

# Wide when not a terminal (pipes, CI logs): a summary table should not be cut to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def fmt(v, spec="{:.4g}"):
    """`v` formatted, or a dash for a missing figure."""
    return "–" if v is None else spec.format(v)
