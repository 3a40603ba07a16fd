"""The ``cohorts check`` and ``cohorts eval`` commands: a rule on its own, and over customers in a file.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="cohorts")
    >>> register(parser.add_subparsers())
    >>> args = parser.parse_args(["eval", "customer.city is known", "customers.jsonl", "--count"])
    >>> args.rule, args.file, args.count
    ('customer.city is known', 'customers.jsonl', True)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from ..ast import InGroup, Node, walk
from ..config import HostSpec
from ..errors import UnknownAttributeError
from ..evaluate import Explanation, compile, validate  # noqa: A004 - cohorts.compile, not the builtin
from ..model import Customer
from ..parser import parse
from ..schema import default_schema
from ._common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_json_option,
    describe_error,
    error_data,
    explanation_data,
    load_customers,
    parse_now,
    plain,
    print_json,
    read_rule,
    schema_file,
    zone,
)
from ._database import add_config_option, host_of, sql_module

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``check`` and ``eval`` subcommands to the ``cohorts`` parser's subparsers."""
    check = subparsers.add_parser(
        "check",
        help="parse and validate a rule; print its canonical form",
        description="Parse a rule and validate it against the default schema; print its canonical form. "
        "On an error, print it with a caret under the fault and exit with 1.",
        epilog="examples:\n"
        "  cohorts check 'customer.vehicle_model contains \"Escape\"'\n"
        "  cohorts check --schema-free 'customer.`Date de renouvellement`.month = january'\n"
        "  cohorts check --sql --dialect sqlite 'customer.city = \"Laval\"'\n"
        "  cohorts check --sql --config host.toml 'customer.city = \"Laval\"'   # over the host's own tables\n"
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
    add_config_option(check, "with a [host] section, the rule is checked against the host's mapped tables and "
                      "--sql prints the query over them")
    add_json_option(check)
    check.set_defaults(handler=_check)

    evaluate = subparsers.add_parser(
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


def _check(args: argparse.Namespace) -> int:
    text = read_rule(args.rule)
    args.rule_text = text
    node = parse(text)
    args.rule_node = node
    schema = schema_file(args.schema)
    host = host_of(args)
    if host is not None:
        return _check_host(args, node, host)
    if args.schema_free:
        compile(node)  # checks types of known attributes and of the rule's values
    else:
        try:
            validate(node, schema or default_schema())
        except UnknownAttributeError as error:
            hint = "use --schema-free, or --schema FILE to declare custom attributes and events"
            raise CommandError(f"{describe_error(error, text, node)}\n({hint})", details=error_data(error)) from error
    result: dict[str, Any] = {"ok": True, "rule": str(node)}
    if args.sql:
        to_sql = sql_module("--sql").to_sql
        sql_text, params = to_sql(node, dialect=args.dialect)
        result.update(dialect=args.dialect, sql=sql_text, params=plain(params))
    return _show_check(args, result, args.dialect)


def _check_host(args: argparse.Namespace, node: Node, host: HostSpec) -> int:
    """``check --config`` with a ``[host]`` section: the rule against the host's mapping, and its SQL there."""
    sql = sql_module("the [host] section")
    host_table = host.host_table()
    reads_phones = sql.dialects.dialect(args.dialect).host_phones
    phones = None if reads_phones else f"{host.state_prefix}phones"  # the table a HostRepository keeps
    sql_text, params = host_table.to_sql(node, dialect=args.dialect, phone_table=phones)
    result: dict[str, Any] = {"ok": True, "rule": str(node), "host_table": host_table.table}
    if args.sql:
        result.update(dialect=args.dialect, sql=sql_text, params=plain(params))
    return _show_check(args, result, f"{args.dialect}, over the host's table {host_table.table}")


def _show_check(args: argparse.Namespace, result: dict[str, Any], where: str) -> int:
    """Print what ``check`` found: JSON, or the canonical rule and (with ``--sql``) its SQL, ``where`` it runs."""
    if args.json:
        print_json(result)
        return EXIT_OK
    print(result["rule"])
    if args.sql:
        print(f"-- SQL ({where})")
        print(result["sql"])
        print("-- parameters")
        print(json.dumps(result["params"], ensure_ascii=False))
    return EXIT_OK


def _eval(args: argparse.Namespace) -> int:
    if args.rule == "-" and args.file == "-":
        raise CommandError("the rule and the file cannot both come from standard input", EXIT_USAGE)
    text = read_rule(args.rule)
    args.rule_text = text
    node = parse(text)
    args.rule_node = node
    tz = zone(args.tz)
    now = parse_now(args.now, tz) or dt.datetime.now(dt.UTC)
    schema = schema_file(args.schema)
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
