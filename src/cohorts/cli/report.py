"""The ``cohorts report`` command: a measure per customer group, over a database given with ``--db``.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="cohorts")
    >>> register(parser.add_subparsers())
    >>> args = parser.parse_args(["report", "--db", "x.db", "--measure", "sum(invoice.total)", "--by", "origin"])
    >>> args.measure, args.by, args.group
    ('sum(invoice.total)', 'origin', [])
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UnknownAttributeError
from ..groups import Groups
from ..reports import Measure, report
from ..schema import Schema
from ._common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_json_option,
    error_data,
    parse_now,
    print_json,
    print_table,
    schema_file,
)
from ._database import add_config_option, add_db_option, open_groups

__all__ = ["register"]

_EXAMPLES = """\
examples:
  cohorts report --db customers.db
  cohorts report --db customers.db --measure "sum(invoice.total)" --start 2026-01-01 --end 2027-01-01
  cohorts report --db customers.db --measure "average(review.rating)" --by origin --json
  cohorts report --db customers.db --measure "sum(time_entry.minutes)" --schema schema.json
  cohorts report --db postgresql+psycopg://app@db/crm --config host.toml   # groups over the host's own tables

A measure's event and field are checked against the schema; declare custom ones
with --schema FILE, a JSON {category: {attribute: type}} such as {"time_entry": {"minutes": "number"}}.
"""


def register(subparsers: Any) -> None:
    """Add the ``report`` subcommand to the ``cohorts`` parser's subparsers."""
    parser = subparsers.add_parser(
        "report",
        help="a measure per customer group (customers, or count/sum/average of an event field)",
        description="Aggregate a measure per group; a customer in several groups counts in each.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_option(parser)
    add_config_option(parser)
    parser.add_argument(
        "--measure", default="customers", help="customers, count(EVENT), sum(EVENT.FIELD) or average(EVENT.FIELD)"
    )
    parser.add_argument("--by", choices=("group", "origin"), default="group", help="one row per group, or per origin")
    parser.add_argument("--start", metavar="DATE", help="first day (or instant) of events counted")
    parser.add_argument("--end", metavar="DATE", help="the day (or instant) events stop being counted")
    parser.add_argument("--group", metavar="NAME", action="append", default=[], help="only these groups (repeatable)")
    parser.add_argument("--now", metavar="WHEN", help="take members at this ISO date or time (default: now)")
    parser.add_argument(
        "--schema", metavar="FILE", help="JSON {category: {attribute: type}} of custom events for --measure"
    )
    add_json_option(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    with open_groups(args) as groups:
        return _report(args, groups)


def _report(args: argparse.Namespace, groups: Groups) -> int:
    """Print the report ``args`` asks for over ``groups``; the exit status."""
    try:
        measure = Measure.parse(args.measure)
    except ValueError as error:
        raise CommandError(str(error), EXIT_USAGE) from None
    schema = _schema(groups, args.schema)
    try:
        measure.check(schema)
    except UnknownAttributeError as error:
        hint = "declare custom events and fields with --schema FILE"
        raise CommandError(f"{error}\n({hint})", details=error_data(error)) from error
    except ValueError as error:
        raise CommandError(str(error)) from None
    now = parse_now(args.now, groups.repository.tz)
    try:
        rows = report(
            groups, measure, by=args.by, start=args.start, end=args.end, names=args.group or None, now=now,
            schema=schema,
        )
    except ValueError as error:
        raise CommandError(str(error), EXIT_USAGE) from None
    if args.json:
        print_json(list(rows))
    else:
        print_table(rows)
    return EXIT_OK


def _schema(groups: Groups, path: str | None) -> Schema:
    """The repository's schema with the ``--schema`` file's additions."""
    known = groups.repository.schema
    extra = schema_file(path)
    return known if extra is None else known.merge(extra)
