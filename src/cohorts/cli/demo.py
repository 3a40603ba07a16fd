"""The ``cohorts demo`` command: the bundled sample and the reference articles' scenarios (see :mod:`cohorts.demo`).

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="cohorts")
    >>> register(parser.add_subparsers())
    >>> args = parser.parse_args(["demo", "--size", "40", "--memory-only"])
    >>> args.size, args.memory_only, args.db
    (40, True, None)
"""

from __future__ import annotations

import argparse
from typing import Any

from .. import demo
from ._common import positive_int

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand to the ``cohorts`` parser's subparsers."""
    parser = subparsers.add_parser(
        "demo",
        help="run the reference articles' scenarios on the bundled sample customers",
        description="Load the bundled sample (customers of a car dealership and insurance agency), evaluate the "
        "reference articles' scenarios, explain one match of each, and run them again in a SQL database.",
        epilog="examples:\n  cohorts demo\n  cohorts demo --dir ./demo-db\n"
        "  cohorts demo --db postgresql+psycopg://localhost/cohorts_demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", metavar="URL", help="database URL (default: SQLite in the demo folder)")
    parser.add_argument("--dir", metavar="PATH", help="folder for the demo's files (default: a new temporary folder)")
    parser.add_argument(
        "--size", metavar="N", type=positive_int, default=None, help="number of sample customers (default: 3000)"
    )
    parser.add_argument("--memory-only", action="store_true", help="skip the SQL database")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    return demo.run(db=args.db, directory=args.dir, size=args.size, sql=not args.memory_only)
