"""What every ``cohorts`` command shares: exit codes, the error a user can fix, and output.

Command modules import this module; it imports none of them. A handler is a
function ``handler(args) -> int`` returning the exit code; it raises
:class:`CommandError` (or any :class:`cohorts.CohortsError`) for errors users can
fix, which :func:`cohorts.cli.main` prints as one message. A handler that stores
the rule's text in ``args.rule_text`` (and its AST in ``args.rule_node``) gets
rule errors shown with the rule and a caret under the fault.
"""

from __future__ import annotations

import argparse
import datetime as dt
import enum
import json
import os
import shutil
import sys
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, NoReturn

from ..ast import Condition, Node, fold, walk
from ..errors import (
    CohortsError,
    DatabaseError,
    RuleSyntaxError,
    RuleTypeError,
    UnknownAttributeError,
)
from ..evaluate import Explanation
from ..model import Customer
from ..parser import parse
from ..reports import format_table
from ..sample import RecordError, read_jsonl
from ..schema import AttributeType, Schema, default_schema

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "Handler",
    "Parser",
    "add_json_option",
    "describe_error",
    "error_data",
    "explanation_data",
    "fit_table",
    "load_customers",
    "parse_now",
    "plain",
    "positive_int",
    "positive_number",
    "print_json",
    "print_table",
    "read_rule",
    "schema_file",
    "terminal_width",
    "zone",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """An error a user can fix, shown as one message.

    Attributes:
        message: what went wrong and, where possible, what to do.
        code: the exit code (1 for rule and data errors, 2 for usage).
        details: extra facts for ``--json`` output.
    """

    def __init__(self, message: str, code: int = EXIT_ERROR, details: Mapping[str, Any] | None = None) -> None:
        self.message = message
        self.code = code
        self.details = dict(details or {})
        super().__init__(message)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become CommandError (exit code 2) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise CommandError(f"{self.prog}: {message}\n(see {self.prog} --help)", EXIT_USAGE)


# -- options --------------------------------------------------------------------------


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """Give a command the ``--json`` option (machine-readable output on stdout)."""
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")


def positive_number(text: str) -> float:
    """An option's number, above 0 (an argparse ``type``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("a number above 0")
    return value


def positive_int(text: str) -> int:
    """An option's whole number, at least 1 (an argparse ``type``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def read_rule(text: str) -> str:
    """The rule an argument names: the text itself, or standard input for ``-``."""
    if text == "-":
        return sys.stdin.read()
    return text


def parse_now(text: str | None, tz: dt.tzinfo) -> dt.datetime | None:
    """The ``--now`` option: ISO date or datetime text; naive values are read in ``tz``.

    Example:
        >>> parse_now("2026-11-16T09:30", dt.UTC)
        datetime.datetime(2026, 11, 16, 9, 30, tzinfo=datetime.timezone.utc)
    """
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(f"--now {text!r} is not an ISO date or time (e.g. 2026-11-16T09:30)", EXIT_USAGE) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


def zone(name: str | None) -> dt.tzinfo:
    """The ``--tz`` option: a time zone name (default UTC)."""
    if name is None:
        return dt.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise CommandError(f"--tz {name!r} is not a time zone (e.g. America/Montreal, UTC)", EXIT_USAGE) from None


def schema_file(path: str | None) -> Schema | None:
    """The default schema extended by a JSON file ``{category: {attribute: type}}``, or None."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as error:
        raise CommandError(f"cannot read schema {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise CommandError(f"schema {path} is not JSON: {error.msg} (line {error.lineno})") from None
    kinds = ", ".join(t.value for t in AttributeType)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise CommandError(
            f'schema {path} must map categories to {{attribute: type}}, e.g. {{"customer": {{"pet": "text"}}}}'
        )
    try:
        return default_schema().merge(Schema(data))
    except ValueError as error:
        raise CommandError(f"schema {path}: {error} (types: {kinds})") from None


def load_customers(path: str, *, skip_bad: bool = False) -> tuple[list[Customer], list[RecordError]]:
    """Customers from a JSON-lines file (``-`` is standard input) and the bad lines.

    Raises CommandError listing the bad lines unless ``skip_bad``.
    """
    try:
        if path == "-":
            items = list(read_jsonl(sys.stdin))
        else:
            with open(path, encoding="utf-8") as handle:
                items = list(read_jsonl(handle))
    except FileNotFoundError:
        raise CommandError(f"cannot read {path}: no such file") from None
    except UnicodeDecodeError as error:
        raise CommandError(f"cannot read {path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror or error}") from None
    customers = [item for item in items if isinstance(item, Customer)]
    bad = [item for item in items if isinstance(item, RecordError)]
    if bad and not skip_bad:
        shown = "\n".join(f"{path}:{error.line}: {error.reason}" for error in bad[:20])
        more = f"\n... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise CommandError(
            f"{len(bad)} bad line(s) in {path}:\n{shown}{more}\n(fix them, or pass --skip-bad to ignore them)",
            details={"bad_lines": [{"line": e.line, "reason": e.reason} for e in bad]},
        )
    return customers, bad


# -- output -----------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data: dates as ISO text, enums as their value, other objects as their repr."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, enum.Enum):
        return plain(value.value)
    return repr(value)


def print_json(data: Any) -> None:
    """Print ``data`` as JSON (see :func:`plain`)."""
    print(json.dumps(plain(data), ensure_ascii=False, indent=2))


def explanation_data(explanation: Explanation) -> dict[str, Any]:
    """An explanation as JSON-ready data: rule, result, value, compared_to, stored, children (built bottom-up:
    the explanations of deep rules nest deeply)."""

    def combine(node: Explanation, children: list[dict[str, Any]]) -> dict[str, Any]:
        data: dict[str, Any] = {"rule": node.rule, "result": node.result}
        if children:
            data["children"] = children
        else:
            data["value"] = plain(node.value)
            data["compared_to"] = plain(node.compared_to)
            if node.stored is not None:
                data["stored"] = plain(node.stored)
        return data

    return fold(explanation, combine, children=lambda node: node.children)


ELLIPSIS = "…"
MIN_COLUMN = 10
"""Text columns are never cut narrower than this (nor than their heading)."""


def terminal_width() -> int | None:
    """The width tables must fit: ``$COLUMNS``, else the terminal's; None when standard output is no terminal.

    Output to a file or a pipe (a cron job's log) keeps every character.
    """
    if os.environ.get("COLUMNS", "").strip().isdigit() or sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def fit_table(rows: Sequence[Mapping[str, Any]], width: int | None) -> str:
    """The text table of ``rows``, its widest text columns cut with an ellipsis to fit in ``width``.

    Numbers are never cut, nor text columns below :data:`MIN_COLUMN`; a table that
    still does not fit is printed as it is.

    Example:
        >>> rows = [{"group": "VIP", "members": 2, "rule": 'customer.tags contains "VIP" and invoice.count >= 3'}]
        >>> print(fit_table(rows, 40))
        group  members  rule
        -----  -------  -----------------------
        VIP          2  customer.tags contains…
    """
    table = format_table(rows)
    lines = table.splitlines()
    if width is None or len(lines) < 2 or len(lines[1]) <= width:
        return table
    columns = list(dict.fromkeys(column for row in rows for column in row))
    limits = {
        column: max([len(column), *(len(value) for row in rows if isinstance(value := row.get(column), str))])
        for column in columns
        if all(isinstance(row.get(column), str | None) for row in rows)
    }
    excess = len(lines[1]) - width  # the dashes under the headings span the whole table
    while excess > 0:
        cuttable = [c for c, limit in limits.items() if limit > max(MIN_COLUMN, len(c))]
        if not cuttable:
            break
        widest = max(cuttable, key=limits.__getitem__)
        limits[widest] -= 1
        excess -= 1

    def cut(column: str, value: Any) -> Any:
        limit = limits.get(column)
        if limit is None or not isinstance(value, str) or len(value) <= limit:
            return value
        return value[: limit - 1].rstrip() + ELLIPSIS

    return format_table([{column: cut(column, value) for column, value in row.items()} for row in rows])


def print_table(rows: Sequence[Mapping[str, Any]]) -> None:
    """Print ``rows`` as a text table that fits the terminal (see :func:`fit_table`)."""
    print(fit_table(rows, terminal_width()))


# -- errors -------------------------------------------------------------------------------


def _underline(text: str, start: int, end: int) -> str:
    """The line of ``text`` holding offset ``start``, with carets under ``start:end``."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", start)
    line_end = len(text) if line_end < 0 else line_end
    width = max(1, min(end, line_end) - start)
    return text[line_start:line_end] + "\n" + " " * (start - line_start) + "^" * width


def _find_condition(node: Node, error: CohortsError) -> Condition | None:
    for item in walk(node):
        if not isinstance(item, Condition) or item.span is None:
            continue
        if isinstance(error, UnknownAttributeError) and str(item.path) == error.path:
            return item
        if isinstance(error, RuleTypeError) and str(item) == error.condition:
            return item
    return None


def describe_error(error: BaseException, text: str | None = None, node: Node | None = None) -> str:
    """One readable message for an error; rule errors show the rule with a caret.

    Example:
        >>> from cohorts.evaluate import validate
        >>> try:
        ...     validate(parse('customer.vehicle_year contains 5'))
        ... except CohortsError as error:
        ...     print(describe_error(error, 'customer.vehicle_year contains 5'))
        contains does not apply to a number: customer.vehicle_year contains 5
        customer.vehicle_year contains 5
        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
    """
    if isinstance(error, CommandError):
        return error.message
    message = str(error)
    if isinstance(error, UnknownAttributeError | RuleTypeError) and text is not None:
        if node is None:
            try:
                node = parse(text)
            except CohortsError:
                node = None
        found = _find_condition(node, error) if node is not None else None
        if found is not None and found.span is not None:
            message += "\n" + _underline(text, found.span.start, found.span.end)
    return message


def error_data(error: BaseException) -> dict[str, Any]:
    """An error's facts for ``--json`` output: type, message and what the error type knows."""
    data: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, CommandError):
        data["message"] = error.message
        data.update(error.details)
    if isinstance(error, RuleSyntaxError):
        data.update(line=error.line, column=error.column, expected=list(error.expected), hint=error.hint)
    if isinstance(error, UnknownAttributeError):
        data.update(path=error.path, suggestion=error.suggestion)
    if isinstance(error, RuleTypeError):
        data.update(condition=error.condition, reason=error.reason)
    if isinstance(error, DatabaseError):
        data.update(url=error.url, reason=error.reason)
    return data
