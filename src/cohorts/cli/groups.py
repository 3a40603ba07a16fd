"""The ``cohorts groups`` commands, over a database given with ``--db``.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="cohorts")
    >>> register(parser.add_subparsers())
    >>> args = parser.parse_args(["groups", "create", "VIP", 'customer.status = "gold"', "--db", "x.db"])
    >>> args.action, args.name, args.rule
    ('create', 'VIP', 'customer.status = "gold"')
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any

from ..ast import Condition, walk
from ..errors import RuleError, UnknownAttributeError
from ..evaluate import validate
from ..groups import Change, Groups, Origin
from ..model import CustomerId
from ..parser import parse
from ..progress import TerminalBar
from ._common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_json_option,
    explanation_data,
    parse_now,
    positive_int,
    print_json,
    print_table,
    read_rule,
)
from ._database import add_config_option, add_db_option, open_groups

__all__ = ["register"]

_EXAMPLES = """\
examples:
  cohorts groups list --db customers.db
  cohorts groups create "Recent repairs" "repair_order.closed.last_time < 730 days ago" --db customers.db
  cohorts groups create VIP --description "hand-picked" --db customers.db
  cohorts groups members "Recent Escapes" --db customers.db --now 2026-11-22
  cohorts groups members VIP --db customers.db --format csv > vip.csv
  cohorts groups why "Recent Escapes" c42 --db customers.db
  cohorts groups refresh --db customers.db --customer c42 --customer c43
  cohorts groups preview VIP 'customer.tags contains "VIP" and invoice.count >= 3' --db customers.db
  cohorts groups set-rule VIP 'customer.tags contains "VIP" and invoice.count >= 3' --db customers.db
  cohorts groups add VIP c42 c43 --db customers.db
  cohorts groups exclude VIP c7 --db customers.db
  cohorts groups delete "Old list" --force --db customers.db
  cohorts groups members VIP --db postgresql+psycopg://app@db/crm --config host.toml   # the host's own tables
"""


def _customer_id(text: str) -> str | int:
    """Ids given on the command line: digits are integer ids, anything else text."""
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() else stripped


def _known_id(groups: Groups, text: str) -> str | int:
    """The id as stored: text ids that look like numbers are tried as text when no integer id exists."""
    candidate = _customer_id(text)
    if isinstance(candidate, int) and groups.repository.get(candidate) is None and groups.repository.get(text):
        return text
    return candidate


def _origins_text(found: frozenset[Any]) -> str:
    return ", ".join(sorted(o.value for o in found))


def _change_data(change: Change) -> dict[str, Any]:
    return {
        "group": change.group,
        "customer": change.customer_id,
        "change": change.kind,
        "before": sorted(o.value for o in change.before),
        "after": sorted(o.value for o in change.after),
        "at": change.at,
    }


def _note_custom_attributes(groups: Groups, rule: str | None) -> None:
    """Name, on stderr, the attributes the schema lacks: custom ones are allowed, but a typo reads as unknown."""
    if rule is None:
        return
    schema = getattr(groups.repository, "schema", None)
    seen: set[str] = set()
    for node in walk(parse(rule)):
        if not isinstance(node, Condition) or str(node.path) in seen:
            continue
        seen.add(str(node.path))
        try:
            validate(node, schema)
        except UnknownAttributeError as error:
            hint = f" (did you mean {error.suggestion}?)" if error.suggestion else ""
            print(f"note: {error.path} is not in the schema{hint}; it is read as a custom attribute, "
                  "unknown for customers without it", file=sys.stderr)
        except RuleError:
            continue  # other problems were reported when the rule was saved


def _print_members(args: argparse.Namespace, members: list[tuple[CustomerId, frozenset[Origin]]]) -> None:
    """A group's members as a table (``--limit`` of them), CSV or JSON."""
    if args.json and args.format != "table":
        raise CommandError(f"--json and --format {args.format} are two outputs: choose one", EXIT_USAGE)
    shown = members[: args.limit] if args.limit is not None else members
    if args.json:
        print_json([{"customer": cid, "origins": sorted(o.value for o in found)} for cid, found in shown])
    elif args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["customer", "origins"])
        writer.writerows([cid, _origins_text(found)] for cid, found in shown)
    else:
        print_table([{"customer": cid, "origins": _origins_text(found)} for cid, found in shown])
        if len(shown) < len(members):
            print(f"... and {len(members) - len(shown)} more (--limit N to see more)")


def _print_changes(args: argparse.Namespace, changes: list[Change]) -> None:
    if args.json:
        print_json([_change_data(c) for c in changes])
    else:
        for change in changes:
            print(change)
        print(f"{len(changes)} change(s)")


def _run_groups(args: argparse.Namespace) -> int:
    with open_groups(args, create=args.action == "create") as groups:
        return _act(args, groups)


def _act(args: argparse.Namespace, groups: Groups) -> int:
    """Do ``args.action`` on ``groups``; the exit status."""
    now = parse_now(args.now, groups.repository.tz) if hasattr(args, "now") else None
    match args.action:
        case "list":
            rows = []
            for name in groups.names():
                definition = groups.definition(name)
                rows.append(
                    {
                        "group": definition.name,
                        "members": groups.count(name, now),
                        "rule version": definition.version or None,
                        "rule": definition.rule or "",
                        "description": definition.description,
                    }
                )
            if args.json:
                print_json(rows)
            else:
                print_table(rows)
        case "create":
            rule = None if args.rule is None else read_rule(args.rule)
            groups.create(args.name, rule, description=args.description or "")
            _note_custom_attributes(groups, rule)
            count = groups.count(args.name, now)
            if args.json:
                print_json({"group": groups.definition(args.name).name, "members": count})
            else:
                print(f"created group {groups.definition(args.name).name!r}: {count} member(s)")
        case "members":
            _print_members(args, list(groups.members(args.name, now).items()))
        case "why":
            why = groups.why(args.name, _known_id(groups, args.customer), now)
            if args.json:
                print_json(
                    {
                        "group": why.group,
                        "customer": why.customer_id,
                        "member": why.member,
                        "origins": sorted(o.value for o in why.origins),
                        "excluded": why.excluded,
                        "rule": why.rule,
                        "rule_version": why.rule_version,
                        "matched_version": why.matched_version,
                        "since": why.since,
                        "evaluated_at": why.evaluated_at,
                        "next_check": why.next_check,
                        "explanation": None if why.explanation is None else explanation_data(why.explanation),
                    }
                )
            else:
                print(why)
        case "refresh":
            ids = [_known_id(groups, c) for c in args.customer] or None
            bar = TerminalBar.for_terminal(enabled=args.show_progress and not args.json)
            groups.progress = bar
            try:
                changes = groups.refresh(now, customer_ids=ids, full=args.full)
            finally:
                if bar is not None:
                    bar.done()
            _print_changes(args, changes)
        case "add" | "remove" | "exclude" | "unexclude":
            ids = [_known_id(groups, c) for c in args.customers]
            changes = getattr(groups, args.action)(args.name, *ids, now=now)
            _print_changes(args, changes)
        case "preview" | "set-rule":
            rule = None if args.rule is None else read_rule(args.rule)
            preview = groups.preview(args.name, rule, now)
            _note_custom_attributes(groups, rule)
            if args.action == "set-rule":
                groups.set_rule(args.name, rule)
            if args.json:
                print_json(
                    {
                        "group": preview.group,
                        "rule": preview.rule,
                        "saved": args.action == "set-rule",
                        "before": preview.before,
                        "after": preview.after,
                        "joining": preview.joining,
                        "leaving": preview.leaving,
                        "joining_sample": list(preview.joining_sample),
                        "leaving_sample": list(preview.leaving_sample),
                    }
                )
            else:
                print(preview)
                if args.action == "set-rule":
                    print(f"saved: rule version {groups.definition(args.name).version}")
        case "rename":
            groups.rename(args.name, args.new_name)
            if args.json:
                print_json({"group": args.new_name, "renamed_from": args.name})
            else:
                print(f"renamed group {args.name!r} to {args.new_name!r}")
        case "delete":
            count = groups.count(args.name, now)
            groups.delete(args.name, force=args.force)
            if args.json:
                print_json({"group": args.name, "deleted": True, "members": count})
            else:
                print(f"deleted group {args.name!r} ({count} member(s))")
        case _:  # pragma: no cover - argparse allows only the choices above
            raise CommandError(f"unknown action {args.action!r}", EXIT_USAGE)
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add the ``groups`` subcommand and its actions to the ``cohorts`` parser's subparsers."""
    parser = subparsers.add_parser(
        "groups",
        help="customer groups: list, create, members, why, add, exclude, preview, set-rule, refresh ...",
        description="Customer groups stored in a database: members come from rules, imports and manual adds.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
        add_db_option(sub)
        add_config_option(sub)
        sub.add_argument("--now", metavar="WHEN", help="evaluate at this ISO date or time (default: now)")
        add_json_option(sub)
        sub.set_defaults(handler=_run_groups)
        return sub

    action("list", "list the groups with their member counts and rules")
    create = action("create", "create a group, with a rule or without")
    create.add_argument("name", metavar="NAME")
    create.add_argument("rule", metavar="RULE", nargs="?", help="the group's rule ('-' reads it from standard input)")
    create.add_argument("--description", metavar="TEXT")
    members = action("members", "list a group's members and why each is in it")
    members.add_argument("name", metavar="NAME")
    members.add_argument("--limit", metavar="N", type=positive_int, help="list the first N members (by id)")
    members.add_argument(
        "--format", choices=("table", "csv"), default="table", help="a text table, or CSV (default: %(default)s)"
    )
    why = action("why", "explain why a customer is or is not in a group")
    why.add_argument("name", metavar="NAME")
    why.add_argument("customer", metavar="CUSTOMER_ID")
    for name, help_text in (
        ("add", "add customers by hand (they stay whatever the rules say)"),
        ("remove", "remove customers added by hand or imported (those the rules match stay)"),
        ("exclude", "keep customers out of the group even when the rules match"),
        ("unexclude", "undo an exclusion"),
    ):
        marked = action(name, help_text)
        marked.add_argument("name", metavar="NAME")
        marked.add_argument("customers", metavar="CUSTOMER_ID", nargs="+")
    for name, help_text in (
        ("preview", "show who would join and who would leave with a new rule, without saving it"),
        ("set-rule", "change a group's rule (prints the same preview); no RULE removes the rule"),
    ):
        ruled = action(name, help_text)
        ruled.add_argument("name", metavar="NAME")
        ruled.add_argument("rule", metavar="RULE", nargs="?", help="the new rule ('-' reads it from standard input)")
    rename = action("rename", "rename a group (rules that name it follow)")
    rename.add_argument("name", metavar="NAME")
    rename.add_argument("new_name", metavar="NEW_NAME")
    delete = action("delete", "delete a group; one with members needs --force")
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--force", action="store_true", help="delete it even though it has members")
    refresh = action("refresh", "bring memberships up to date and print who joined and who left")
    refresh.add_argument(
        "--customer", metavar="ID", action="append", default=[], help="re-evaluate a changed customer (repeatable)"
    )
    refresh.add_argument("--full", action="store_true", help="re-evaluate every rule over every customer")
    refresh.add_argument(
        "--no-progress", dest="show_progress", action="store_false", help="no progress bar (shown on a terminal)"
    )
