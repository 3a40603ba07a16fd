"""The ``cohorts import`` command: import customers from a CSV or Excel file into a group.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="cohorts")
    >>> register(parser.add_subparsers())
    >>> args = parser.parse_args(["import", "clients.csv", "--db", "x.db", "--group", "VIP",
    ...                           "--map", "Cell=customer.phone", "--skip", "Notes"])
    >>> mapping_of(args)
    {'Cell': 'customer.phone', 'Notes': None}
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import CohortsError
from ..importers import Column, ImportReport, import_file, preview_file
from ..imports.reading import MAX_CELL_CHARS, MAX_CELL_LINES, MAX_ROWS, MAX_XLSX_BYTES
from ..progress import TerminalBar
from ._common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, CommandError, print_json
from ._database import ENVIRONMENT_VARIABLE, add_config_option, add_db_option, database_url, host_of, open_repository

__all__ = ["mapping_of", "register"]

_EXAMPLES = """\
examples:
  cohorts import clients.csv --db customers.db --group "Oil change 2026"
  cohorts import clients.xlsx --db customers.db --group VIP --map "Cell=customer.phone" --skip Notes
  cohorts import export.csv --db customers.db --group Insured --new-attribute "Policy number" --match-on phone
  cohorts import export.csv --db customers.db --group VIP --dry-run --rejects rejects.csv
  cohorts import export.csv --preview

Each column is mapped to an attribute path such as customer.phone or appointment.at
(appointment rows become events), or skipped. Columns not given with --map/--skip take the
guessed mapping (see --preview). Exit codes: 0 every row imported, 1 rows were rejected
(see --rejects) or the file or mapping is wrong, 2 usage error.
"""


def register(subparsers: Any) -> None:
    """Add the ``import`` subcommand to the ``cohorts`` parser's subparsers."""
    parser = subparsers.add_parser(
        "import",
        help="import customers from a CSV or Excel file into a group",
        description="Import customers from a .csv or .xlsx file into a repository and a group (origin: imported). "
        "Rows that cannot be imported are reported with their line and the reason; none is lost silently.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="the .csv or .xlsx file")
    add_db_option(parser, "; made when missing; required unless --preview")
    add_config_option(parser)
    parser.add_argument("--group", metavar="NAME", help="the group imported customers join (created if missing)")
    parser.add_argument(
        "--no-header", dest="header", action="store_false", help="the first row is data: columns are numbered from 0"
    )
    parser.add_argument(
        "--map",
        metavar="COLUMN=PATH",
        action="append",
        default=[],
        help='map a column to an attribute path, e.g. "Cell=customer.phone" (repeatable)',
    )
    parser.add_argument(
        "--new-attribute",
        metavar="NAME",
        action="append",
        default=[],
        help="create a text attribute: a column's header (-> customer.<name>) or a path (repeatable)",
    )
    parser.add_argument(
        "--skip", metavar="COLUMN", action="append", default=[], help="skip a column (repeatable; #N for position N)"
    )
    parser.add_argument(
        "--match-on", metavar="KEY", help="match existing customers on id, phone, email or another attribute"
    )
    parser.add_argument("--policy", choices=("fill", "overwrite"), default="fill", help="update of matched customers: "
                        "fill blank attributes only, or overwrite them (default: %(default)s)")
    parser.add_argument("--region", metavar="CC", help="default country of phone numbers, e.g. CA, US, FR")
    parser.add_argument("--day-first", action="store_true", help="read dates such as 03/04/2026 as 3 April")
    parser.add_argument("--sheet", metavar="NAME", help="the worksheet of an .xlsx file (default: the first)")
    parser.add_argument("--delimiter", metavar="CHAR", help="CSV delimiter (default: sniffed among , ; and tab)")
    parser.add_argument("--encoding", metavar="NAME", help="CSV encoding (default: UTF-8, else Windows-1252)")
    parser.add_argument("--atomic", action="store_true", help="write nothing when any row is rejected")
    parser.add_argument("--dry-run", action="store_true", help="report what would happen without writing")
    parser.add_argument("--rejects", metavar="FILE", help="write the rejected rows, with reasons, to this CSV")
    parser.add_argument("--preview", action="store_true", help="show the first rows and the guessed mapping, then stop")
    parser.add_argument("--no-progress", dest="show_progress", action="store_false", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")
    parser.add_argument(
        "--max-rows", type=int, default=MAX_ROWS, metavar="N", help="refuse a file of more rows (default: %(default)s)"
    )
    parser.add_argument(
        "--max-cell-chars",
        type=int,
        default=MAX_CELL_CHARS,
        metavar="N",
        help="reject a row with a longer cell (default: %(default)s)",
    )
    parser.add_argument(
        "--max-cell-lines",
        type=int,
        default=MAX_CELL_LINES,
        metavar="N",
        help="reject a row whose quoted cell runs over more lines (default: %(default)s)",
    )
    parser.add_argument(
        "--max-xlsx-bytes",
        type=int,
        default=MAX_XLSX_BYTES,
        metavar="N",
        help="refuse a workbook that expands to more bytes (default: %(default)s)",
    )
    parser.set_defaults(handler=_run)


def _key(text: str, header: bool) -> Column:
    """A column named on the command line: header text, or ``#N`` (and, without header, ``N``) for a position."""
    text = text.strip()
    if not header or (text.startswith("#") and text[1:].isdigit()):
        return _position(text)
    return text


def _position(text: str) -> int:
    digits = text.removeprefix("#")
    if not digits.isdigit():
        raise CommandError(f"with --no-header, columns are numbered from 0, not {text!r}", EXIT_USAGE)
    return int(digits)


def mapping_of(args: argparse.Namespace) -> dict[Column, str | None] | None:
    """The mapping the ``--map`` and ``--skip`` options give (None when neither was used)."""
    mapping: dict[Column, str | None] = {}
    for item in args.map:
        column, equals, target = item.rpartition("=")
        if not equals or not column.strip():
            raise CommandError(f'--map {item!r}: write COLUMN=PATH, e.g. "Cell=customer.phone"', EXIT_USAGE)
        mapping[_key(column, args.header)] = target.strip() or None
    for column in args.skip:
        mapping[_key(column, args.header)] = None
    return mapping or None


def _report_data(report: ImportReport, rejects_file: str | None) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "file": report.path,
        "rows": report.rows_read,
        "created": report.created,
        "updated": report.updated,
        "merged": report.merged,
        "skipped": report.skipped,
        "rejected": report.rejected,
        "written": report.written,
        "dry_run": report.dry_run,
        "group": report.group,
        "match_on": report.match_on,
        "mapping": {str(c): t for c, t in report.mapping.items()},
        "guessed": {str(c): t for c, t in report.guessed.items()},
        "new_attributes": list(report.added),
        "rejects": [{"line": r.line, "column": r.column, "reason": r.reason} for r in report.rejects],
        "rejects_file": rejects_file,
    }


def _run(args: argparse.Namespace) -> int:
    mapping = mapping_of(args)
    if args.preview:
        with _usage_errors():
            preview = preview_file(args.file, **_reading(args))
        if args.json:
            print_json(
                {
                    "columns": [str(c) for c in preview.columns],
                    "guessed": {str(c): t for c, t in preview.guessed.items()},
                    "rows": preview.rows,
                    "lines": preview.lines,
                    "delimiter": preview.delimiter,
                    "encoding": preview.encoding,
                    "sheet": preview.sheet,
                }
            )
        else:
            print(preview)
        return EXIT_OK
    url = database_url(args, f"cohorts import needs --db URL or {ENVIRONMENT_VARIABLE} (or --preview)")
    if not args.group:
        raise CommandError("cohorts import needs --group NAME: the group imported customers join", EXIT_USAGE)
    repository = open_repository(url, create=True, host=host_of(args))
    bar = TerminalBar.for_terminal(enabled=args.show_progress and not args.json)
    try:
        with _usage_errors():
            report = import_file(
                args.file,
                repository,
                group=args.group,
                mapping=mapping,
                new_attributes=args.new_attribute,
                match_on=args.match_on,
                region=args.region,
                day_first=args.day_first,
                atomic=args.atomic,
                progress=bar,
                policy=args.policy,
                dry_run=args.dry_run,
                **_reading(args),
            )
    finally:
        if bar is not None:
            bar.done()
        repository.close()
    if args.rejects and report.rejects:
        report.write_rejects(args.rejects)
    if args.json:
        print_json(_report_data(report, args.rejects if report.rejects else None))
    else:
        print(report)
        if args.rejects and report.rejects:
            count = len(report.rejected_lines())
            print(f"{count} rejected row(s) written to {args.rejects}: fix them and import it again")
        elif report.rejects:
            print("(pass --rejects FILE to get the rejected rows as a CSV to fix and import again)")
    return EXIT_OK if report.ok else EXIT_ERROR


def _reading(args: argparse.Namespace) -> dict[str, Any]:
    """How the file is read, as ``preview_file`` and ``import_file`` both take it."""
    return {
        "header": args.header,
        "delimiter": args.delimiter,
        "encoding": args.encoding,
        "sheet": args.sheet,
        "max_rows": args.max_rows,
        "max_cell_chars": args.max_cell_chars,
        "max_cell_lines": args.max_cell_lines,
        "max_xlsx_bytes": args.max_xlsx_bytes,
    }


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    """Plain ValueErrors (a bad option value) as usage errors; cohorts' own errors pass through."""
    try:
        yield
    except ValueError as error:
        if isinstance(error, CohortsError):
            raise
        raise CommandError(str(error), EXIT_USAGE) from None
