"""The ``cohorts`` command (also ``python -m cohorts``).

Subcommands: ``check`` (parse and validate a rule), ``eval`` (run a rule over
customers in a JSON-lines file), ``demo`` (the bundled sample and the
reference articles' scenarios), plus those of optional command modules.

Exit codes: 0 success, 1 a rule or data error (the message says what and
where), 2 a usage error (bad options), 3 an unexpected internal error (run
again with ``--debug`` for the traceback), 130 interrupted.

Adding commands: a module ``cohorts.cli_<name>`` listed in
:data:`COMMAND_MODULES` defines ``register(subparsers) -> None``, which adds
its parsers with ``subparsers.add_parser(...)`` and sets a handler with
``parser.set_defaults(handler=function)``, where ``function(args) -> int``
returns the exit code. Handlers raise :class:`CommandError` (or any
:class:`cohorts.CohortsError`) for errors users can fix; :func:`main` prints them
as one message. :func:`add_json_option`, :func:`print_json`, :func:`read_rule`,
:func:`parse_now` and :func:`load_customers` are there for them to share; a
handler that stores the rule's text in ``args.rule_text`` gets rule errors
shown with the rule and a caret under the fault.

Example:
    >>> main(["check", 'customer.city = "Laval" and customer.vehicle_year >= 2019'])
    customer.city = "Laval" AND customer.vehicle_year >= 2019
    0
"""

from __future__ import annotations

import argparse
import datetime as dt
import enum
import importlib
import json
import sys
import traceback
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, NoReturn

from .ast import Condition, InGroup, Node, fold, walk
from .errors import CohortsError, RuleSyntaxError, RuleTypeError, UnknownAttributeError
from .evaluate import Explanation, compile, validate  # noqa: A004 - cohorts.compile, not the builtin
from .model import Customer
from .parser import parse
from .sample import RecordError, read_jsonl
from .schema import AttributeType, Schema, default_schema

__all__ = [
    "COMMAND_MODULES",
    "EXIT_ERROR",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "add_json_option",
    "build_parser",
    "describe_error",
    "explanation_data",
    "load_customers",
    "main",
    "open_repository",
    "parse_now",
    "print_json",
    "read_rule",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

COMMAND_MODULES = ("cli_groups", "cli_import", "cli_campaigns")
"""Optional modules of ``cohorts`` that add subcommands when present."""

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


# -- helpers shared by commands ----------------------------------------------


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """Give a command the ``--json`` option (machine-readable output on stdout)."""
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    return repr(value)


def open_repository(url: str) -> Any:
    """The SQL repository a ``--db URL`` names; a missing extra or a bad URL is a CommandError."""
    try:
        module = importlib.import_module("cohorts.sql")
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] in ("sqlalchemy", "psycopg"):
            hint = f"--db needs the sql extra: pip install 'cohorts[sql]' ({error.name} is missing)"
            raise CommandError(hint) from None
        raise
    try:
        return module.SQLRepository(url)
    except ValueError as error:
        raise CommandError(f"--db {url!r}: {error}", EXIT_USAGE) from None


def print_json(data: Any) -> None:
    """Print ``data`` as JSON (dates as ISO text, enums as their value, other objects as their repr)."""
    print(json.dumps(_plain(data), ensure_ascii=False, indent=2))


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


def _zone(name: str | None) -> dt.tzinfo:
    if name is None:
        return dt.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise CommandError(f"--tz {name!r} is not a time zone (e.g. America/Montreal, UTC)", EXIT_USAGE) from None


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


def _schema_file(path: str | None) -> Schema | None:
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


def _error_data(error: BaseException) -> dict[str, Any]:
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
    return data


def explanation_data(explanation: Explanation) -> dict[str, Any]:
    """An explanation as JSON-ready data: rule, result, value, compared_to, children (built bottom-up:
    the explanations of deep rules nest deeply)."""

    def combine(node: Explanation, children: list[dict[str, Any]]) -> dict[str, Any]:
        data: dict[str, Any] = {"rule": node.rule, "result": node.result}
        if children:
            data["children"] = children
        else:
            data["value"] = _plain(node.value)
            data["compared_to"] = _plain(node.compared_to)
        return data

    return fold(explanation, combine, children=lambda node: node.children)


# -- check ---------------------------------------------------------------------


def _load_sql() -> Any:
    """The SQL compiler module, or a CommandError saying what is missing."""
    try:
        return importlib.import_module("cohorts.sql")
    except ModuleNotFoundError as error:
        if error.name == "cohorts.sql":
            raise CommandError("--sql is not available: this version of cohorts has no SQL compiler") from None
        if error.name and error.name.split(".")[0] in ("sqlalchemy", "psycopg"):
            raise CommandError(
                f"--sql needs the sql extra: pip install 'cohorts[sql]' ({error.name} is missing)"
            ) from None
        raise


def _check(args: argparse.Namespace) -> int:
    text = read_rule(args.rule)
    args.rule_text = text
    node = parse(text)
    args.rule_node = node
    schema = _schema_file(args.schema)
    if args.schema_free:
        compile(node)  # checks types of known attributes and of the rule's values
    else:
        try:
            validate(node, schema or default_schema())
        except UnknownAttributeError as error:
            hint = "use --schema-free, or --schema FILE to declare custom attributes and events"
            raise CommandError(f"{describe_error(error, text, node)}\n({hint})", details=_error_data(error)) from error
    result: dict[str, Any] = {"ok": True, "rule": str(node)}
    if args.sql:
        to_sql = _load_sql().to_sql
        sql_text, params = to_sql(node, dialect=args.dialect)
        result.update(dialect=args.dialect, sql=sql_text, params=_plain(params))
    if args.json:
        print_json(result)
        return EXIT_OK
    print(result["rule"])
    if args.sql:
        print(f"-- SQL ({args.dialect})")
        print(result["sql"])
        print("-- parameters")
        print(json.dumps(result["params"], ensure_ascii=False))
    return EXIT_OK


# -- eval --------------------------------------------------------------------------


def _eval(args: argparse.Namespace) -> int:
    if args.rule == "-" and args.file == "-":
        raise CommandError("the rule and the file cannot both come from standard input", EXIT_USAGE)
    text = read_rule(args.rule)
    args.rule_text = text
    node = parse(text)
    args.rule_node = node
    tz = _zone(args.tz)
    now = parse_now(args.now, tz) or dt.datetime.now(dt.UTC)
    schema = _schema_file(args.schema)
    predicate = compile(node, schema=schema, tz=tz)
    groups = sorted({item.group for item in walk(node) if isinstance(item, InGroup)})
    if groups:
        names = ", ".join(f'"{g}"' for g in groups)
        raise CommandError(f"cohorts eval knows no groups, and the rule refers to group {names}")
    customers, bad = load_customers(args.file, skip_bad=args.skip_bad)
    for error in bad:
        print(f"{args.file}:{error.line}: skipped: {error.reason}", file=sys.stderr)

    explanations: list[tuple[Customer, Explanation]] = []
    if args.explain:
        by_id = {str(c.id): c for c in customers}
        for wanted in args.explain:
            customer = by_id.get(wanted)
            if customer is None:
                raise CommandError(f"no customer with id {wanted!r} in {args.file}")
            explanations.append((customer, predicate.explain(customer, now)))
    matching = list(predicate.select(customers, now))

    if args.json:
        result: dict[str, Any] = {
            "rule": str(node),
            "now": now,
            "tz": str(tz),
            "customers": len(customers),
            "count": len(matching),
            "matches": matching,
        }
        if bad:
            result["skipped"] = [{"line": e.line, "reason": e.reason} for e in bad]
        if explanations:
            result["explanations"] = [{"id": c.id, **explanation_data(e)} for c, e in explanations]
        print_json(result)
        return EXIT_OK
    if explanations:
        for index, (customer, explanation) in enumerate(explanations):
            if index:
                print()
            verdict = "matches" if explanation.matched else "does not match"
            print(f"{customer.id} {verdict} (at {now.isoformat()}):")
            print(explanation)
        return EXIT_OK
    if args.count:
        print(len(matching))
        return EXIT_OK
    for ident in matching:
        print(ident)
    return EXIT_OK


# -- demo ----------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(db=args.db, directory=args.dir, size=args.size, sql=not args.memory_only)


# -- the parser ----------------------------------------------------------------------

_EPILOG = """\
examples:
  cohorts check 'customer.tags contains "VIP" and customer.city = "Laval"'
  cohorts check --sql --dialect sqlite 'repair_order.closed.last_time < 730 days ago'
  cohorts eval 'customer.vehicle_year = 2019' customers.jsonl --now 2026-11-16
  cohorts eval 'claim.filed.at within last 3 months' customers.jsonl --explain c0042
  cohorts demo --dir ./demo

exit codes: 0 ok, 1 rule or data error, 2 usage error, 3 internal error
documentation: docs/cli.md and docs/language.md
"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become CommandError (exit code 2) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise CommandError(f"{self.prog}: {message}\n(see {self.prog} --help)", EXIT_USAGE)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cohorts")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser(modules: Iterable[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The ``cohorts`` argument parser, with the commands of the optional ``modules`` that exist."""
    parser = _Parser(
        prog="cohorts",
        description="Customer segmentation rules: check them, run them on customers, see the demo.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cohorts {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors (anywhere on the line)")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", parser_class=_Parser)

    check = commands.add_parser(
        "check",
        help="parse and validate a rule; print its canonical form",
        description="Parse a rule and validate it against the default schema; print its canonical form. "
        "On an error, print it with a caret under the fault and exit with 1.",
        epilog="examples:\n"
        "  cohorts check 'customer.vehicle_model contains \"Escape\"'\n"
        "  cohorts check --schema-free 'customer.`Date de renouvellement`.month = january'\n"
        "  cohorts check --sql --dialect sqlite 'customer.city = \"Laval\"'\n"
        "  echo 'customer.tags contains \"VIP\"' | cohorts check -",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("rule", metavar="RULE", help="the rule text, or - to read it from standard input")
    free = check.add_mutually_exclusive_group()
    free.add_argument(
        "--schema-free",
        action="store_true",
        help="allow attributes and events the default schema lacks (typed by the rule's values)",
    )
    free.add_argument("--schema", metavar="FILE", help="JSON {category: {attribute: type}} added to the default schema")
    check.add_argument("--sql", action="store_true", help="also print the SQL the rule compiles to, and its parameters")
    check.add_argument(
        "--dialect",
        choices=("postgresql", "sqlite"),
        default="postgresql",
        help="SQL dialect for --sql (default: %(default)s)",
    )
    add_json_option(check)
    check.set_defaults(handler=_check)

    evaluate = commands.add_parser(
        "eval",
        help="print the ids of the customers in a JSON-lines file that match a rule",
        description="Evaluate a rule over customers read from a JSON-lines file, one customer per line: "
        '{"id": ..., "attributes": {...}, "events": [{"name": ..., "at": ISO, "attributes": {...}}]}. '
        "Flat objects work too: keys other than id and events are attributes. Prints the matching ids.",
        epilog="examples:\n"
        "  cohorts eval 'customer.tags contains \"cat owner\"' customers.jsonl\n"
        "  cohorts eval 'repair_order.closed.last_time < 730 days ago' customers.jsonl --now 2026-11-16 --count\n"
        "  cohorts eval 'customer.city != \"Laval\"' customers.jsonl --explain c0001 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("rule", metavar="RULE", help="the rule text, or - to read it from standard input")
    evaluate.add_argument("file", metavar="FILE", help="JSON-lines file of customers, or - for standard input")
    evaluate.add_argument("--now", metavar="ISO", help="evaluate at this moment (default: the current time)")
    evaluate.add_argument("--tz", metavar="ZONE", help="time zone of naive datetimes and calendar words (default: UTC)")
    evaluate.add_argument(
        "--explain", metavar="ID", action="append", help="explain the rule for this customer (repeatable)"
    )
    evaluate.add_argument("--count", action="store_true", help="print only how many customers match")
    evaluate.add_argument(
        "--skip-bad", action="store_true", help="skip bad lines (reported on stderr) instead of failing"
    )
    evaluate.add_argument(
        "--schema", metavar="FILE", help="JSON {category: {attribute: type}} added to the default schema"
    )
    add_json_option(evaluate)
    evaluate.set_defaults(handler=_eval)

    demo = commands.add_parser(
        "demo",
        help="run the reference articles' scenarios on the bundled sample customers",
        description="Load the bundled sample (customers of a car dealership and insurance agency), evaluate the "
        "reference articles' scenarios, explain one match of each, and run them again in a SQL database.",
        epilog="examples:\n  cohorts demo\n  cohorts demo --dir ./demo-db\n"
        "  cohorts demo --db postgresql+psycopg://localhost/cohorts_demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--db", metavar="URL", help="database URL (default: SQLite in the demo folder)")
    demo.add_argument("--dir", metavar="PATH", help="folder for the demo's files (default: a new temporary folder)")
    demo.add_argument(
        "--size", metavar="N", type=_size, default=None, help="number of sample customers (default: 3000)"
    )
    demo.add_argument("--memory-only", action="store_true", help="skip the SQL database")
    demo.set_defaults(handler=_demo)

    for name in modules:
        register = _optional_register(name)
        if register is not None:
            register(commands)
    return parser


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def _optional_register(name: str) -> Callable[[Any], None] | None:
    try:
        module = importlib.import_module(f"cohorts.{name}")
    except ImportError as error:
        if error.name == f"cohorts.{name}":
            return None  # the module is not there: its commands are not offered
        raise
    register: Callable[[Any], None] = module.register
    return register


# -- main ----------------------------------------------------------------------------


def _split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """Take ``--debug`` from anywhere before a ``--``, so every command accepts it."""
    args = list(argv)
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end]
    return [a for i, a in enumerate(args) if not (i < end and a == "--debug")], debug


def _fail(error: BaseException, args: argparse.Namespace | None, code: int) -> int:
    wants_json = bool(getattr(args, "json", False))
    if wants_json:
        print_json({"ok": False, "error": _error_data(error)})
    else:
        text = getattr(args, "rule_text", None)
        node = getattr(args, "rule_node", None)
        print(f"error: {describe_error(error, text, node)}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cohorts`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    arguments, debug = _split_debug(sys.argv[1:] if argv is None else argv)
    args: argparse.Namespace | None = None
    try:
        parser = build_parser()
        args = parser.parse_args(arguments)
        handler: Handler | None = getattr(args, "handler", None)
        if handler is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return handler(args)
    except CommandError as error:
        if debug:
            traceback.print_exc()
        return _fail(error, args, error.code)
    except CohortsError as error:
        if debug:
            traceback.print_exc()
        return _fail(error, args, EXIT_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (as with `| head`): not an error of ours.
        sys.stderr.close()
        return EXIT_OK
    except Exception as error:
        if debug:
            raise
        print(
            f"error: unexpected {type(error).__name__}: {error}\n(this is a bug in cohorts; run again with --debug "
            "for the traceback and report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
