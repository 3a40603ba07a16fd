"""The ``cohorts campaigns`` commands: ``run`` (the cron job) and ``audience NAME`` (who a campaign reaches now).

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="cohorts")
    >>> register(parser.add_subparsers())
    >>> args = parser.parse_args(["campaigns", "run", "--db", "c.db", "--config", "campaigns.toml"])
    >>> args.db, args.config, args.sender
    ('c.db', 'campaigns.toml', None)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import sys
from collections.abc import Iterator
from typing import Any

from ..campaigns import (
    Campaign,
    RunnerBusyError,
    Sender,
    audience,
    eligibility,
    remove_from_campaign,
    run_campaigns,
    standard_handlers,
)
from ..config import Config, load_config
from ..groups import Groups
from ..progress import TerminalBar
from ..repository import Repository
from ._common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_json_option,
    parse_now,
    positive_int,
    positive_number,
    print_json,
    print_table,
)
from ._database import add_db_option, database_url, open_repository

__all__ = ["load_sender", "register"]

_EXAMPLES = """\
examples:
  cohorts campaigns run --db customers.db --config campaigns.toml --sender myshop.messaging:sender
  cohorts campaigns run --db postgresql+psycopg://app@db/crm --config campaigns.toml --json
  cohorts campaigns audience "Spring service" --db customers.db --config campaigns.toml
  cohorts campaigns remove "Spring service" 42 --db customers.db --config campaigns.toml --reason "asked by phone"

crontab (every 15 minutes; runs never send twice, even when they overlap):
  */15 * * * * cohorts campaigns run --db postgresql+psycopg://app@db/crm --config /etc/cohorts/campaigns.toml \\
      --sender myshop.messaging:sender >> /var/log/cohorts-campaigns.log 2>&1

One run at a time holds the database's runner lock; a run that finds it taken does nothing and
exits 0 with a note (--wait waits for it; --overlap runs beside it).

Exit codes: 0 every action ran or was held for a reason (unsubscribed, capped, quiet hours),
1 an action failed (it is retried on later runs) or the configuration is wrong, 2 usage error.
"""


def register(subparsers: Any) -> None:
    """Add the ``campaigns`` command and its ``run`` and ``audience`` subcommands."""
    parser = subparsers.add_parser(
        "campaigns",
        help="run customer campaigns (the cron job) or show a campaign's audience",
        description="Customer campaigns targeted at groups and statuses, declared in a TOML file.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="campaigns_command", metavar="COMMAND")
    parser.set_defaults(handler=lambda args: _usage(parser))

    run = commands.add_parser(
        "run",
        help="run every eligible campaign once per customer (for a crontab line)",
        description="Run every eligible campaign of the configuration: enroll new customers and run each "
        "action once per customer. Prints a report per campaign; exits 1 when an action failed.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(run)
    run.add_argument("--campaign", metavar="NAME", action="append", default=[],
                     help="run only this campaign (repeatable; default: all of them)")
    run.add_argument("--sender", metavar="MODULE:NAME",
                     help="the email/SMS provider: a cohorts Sender, or a callable returning one, in an importable "
                     "module (needed when a campaign has email or sms actions)")
    run.add_argument("--max-actions", metavar="N", type=positive_int,
                     help="process at most N due actions in this run; the rest stays due for the next run")
    run.add_argument("--max-seconds", metavar="S", type=positive_number,
                     help="start no action after S seconds; the rest stays due for the next run")
    run.add_argument("--wait", action="store_true",
                     help="when another run holds the database's runner lock, wait for it (default: exit at once, "
                     "doing nothing, with a note)")
    run.add_argument("--overlap", action="store_true",
                     help="run without the runner lock, beside other runs (each action still runs once)")
    run.add_argument("--no-progress", dest="show_progress", action="store_false",
                     help="no progress bar (shown when standard error is a terminal)")
    run.set_defaults(handler=_run)

    show = commands.add_parser(
        "audience",
        help="show who a campaign would reach now, and why",
        description="Show who campaign NAME would reach now: each customer with why it is in the audience, and "
        "the customers for whom marketing actions are suppressed, with the reason.",
    )
    show.add_argument("name", metavar="NAME", help="the campaign's name (case-insensitive)")
    _common(show)
    show.add_argument("--limit", type=int, default=50, metavar="N", help="customers listed in text output "
                      "(default: %(default)s; --json lists them all)")
    show.set_defaults(handler=_audience)

    remove = commands.add_parser(
        "remove",
        help="take one customer out of a campaign for good",
        description="Take customer ID out of campaign NAME: its actions not done yet are recorded as skipped, "
        "with the reason, and never run; what was done stays in the ledger. A customer not enrolled yet is "
        "kept out of later runs.",
    )
    remove.add_argument("name", metavar="NAME", help="the campaign's name (case-insensitive)")
    remove.add_argument("customer", metavar="ID", help="the customer's id (digits are read as a number)")
    _common(remove)
    remove.add_argument("--reason", default="removed by hand", help="recorded in the ledger (default: %(default)s)")
    remove.set_defaults(handler=_remove)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _common(parser: argparse.ArgumentParser) -> None:
    add_db_option(parser)
    parser.add_argument("--config", metavar="FILE", required=True,
                        help="the campaigns TOML file (with a [host] section, --db is read as the host's own tables)")
    parser.add_argument("--now", metavar="ISO", help="run as of this time (default: now; naive means UTC)")
    add_json_option(parser)


def load_sender(spec: str) -> Sender:
    """The Sender named ``module:attribute``: a Sender object, or a callable (a class, a factory) returning one."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CommandError(f"--sender {spec!r} must be MODULE:NAME, e.g. myshop.messaging:sender", EXIT_USAGE)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"--sender: cannot import {module_name!r}: {error}", EXIT_USAGE) from None
    try:
        found = getattr(module, attribute)
    except AttributeError:
        raise CommandError(f"--sender: module {module_name!r} has no {attribute!r}", EXIT_USAGE) from None
    if not isinstance(found, Sender) or isinstance(found, type):
        if not callable(found):
            raise CommandError(f"--sender: {spec} is neither a Sender nor a callable returning one", EXIT_USAGE)
        found = found()
    if not isinstance(found, Sender):
        raise CommandError(f"--sender: {spec} did not give an object with a send(message) method", EXIT_USAGE)
    return found


def _groups(config: Config, campaigns: list[Campaign], repository: Repository) -> Groups | None:
    if not config.groups and all(c.group is None for c in campaigns):
        return None
    groups = Groups(repository)
    for note in config.apply_groups(groups):
        print(f"note: {note}", file=sys.stderr)
    return groups


@contextlib.contextmanager
def _setup(args: argparse.Namespace) -> Iterator[tuple[Config, Repository, dt.datetime]]:
    """The configuration, the repository of ``--db`` (the host's tables with a ``[host]`` section) and the
    time to run at; the repository's connections are closed at the end of the block."""
    config = load_config(args.config)
    now = parse_now(args.now, dt.UTC) or dt.datetime.now(dt.UTC)
    with contextlib.closing(open_repository(database_url(args), host=config.host)) as repository:
        yield config, repository, now


def _run(args: argparse.Namespace) -> int:
    with _setup(args) as (config, repository, now):
        return _run_campaigns(args, config, repository, now)


def _run_campaigns(args: argparse.Namespace, config: Config, repository: Repository, now: dt.datetime) -> int:
    campaigns = [config.campaign(name) for name in args.campaign] if args.campaign else list(config.campaigns)
    sender = load_sender(args.sender) if args.sender else None
    if sender is None:
        for campaign in campaigns:
            kinds = sorted({a.kind for a in campaign.actions if a.kind in ("email", "sms")})
            if kinds and eligibility(campaign, now).ok:
                raise CommandError(
                    f"campaign {campaign.name!r} has {' and '.join(kinds)} actions: pass --sender MODULE:NAME "
                    "(your provider, a cohorts Sender)",
                    EXIT_USAGE,
                )
    groups = _groups(config, campaigns, repository)
    bar = TerminalBar.for_terminal(enabled=args.show_progress and not args.json)
    try:
        report = run_campaigns(campaigns, repository, groups, standard_handlers(repository, sender), now,
                               policy=config.policy, progress=bar, max_actions=args.max_actions,
                               max_seconds=args.max_seconds, exclusive=not args.overlap, wait=args.wait)
    except RunnerBusyError as busy:
        if args.json:
            print_json({"now": now.isoformat(), "skipped": str(busy)})
        print(f"note: {busy}", file=sys.stderr)
        return EXIT_OK
    finally:
        if bar is not None:
            bar.done()
    if args.json:
        print_json(report.to_dict())
    else:
        print_table(report.rows())  # fitted to the terminal, as the other commands' tables
        for line in report.problems():
            print(line)
    return EXIT_OK if report.ok else EXIT_ERROR


def _audience(args: argparse.Namespace) -> int:
    with _setup(args) as (config, repository, now):
        return _show_audience(args, config, repository, now)


def _show_audience(args: argparse.Namespace, config: Config, repository: Repository, now: dt.datetime) -> int:
    campaign = config.campaign(args.name)
    verdict = eligibility(campaign, now)
    groups = _groups(config, [campaign], repository)
    members = audience(campaign, repository, groups, now)
    if args.json:
        print_json({
            "campaign": campaign.name,
            "now": now.isoformat(),
            "eligible": verdict.ok,
            "reasons": list(verdict.reasons),
            "size": len(members),
            "suppressed": len(members.suppressed),
            "members": [
                {"id": m.id, "reasons": list(m.reasons), "suppressed": m.suppressed} for m in members.members()
            ],
        })
        return EXIT_OK
    target = f"group {campaign.group!r}" if campaign.group else "all customers"
    if campaign.trigger == "joined":
        target += f" (members who joined since {campaign.started_at():%Y-%m-%d %H:%M} UTC)"
    print(f"campaign {campaign.name!r}: {target}, status {campaign.status}; {verdict} at {now.isoformat()}")
    print(f"{len(members)} customer(s), {len(members.suppressed)} suppressed for marketing actions")
    for index, member in enumerate(members.members()):
        if index >= args.limit:
            print(f"... and {len(members) - args.limit} more (--limit, or --json for all)")
            break
        line = f"  {member.id}: {'; '.join(member.reasons)}"
        if member.suppressed:
            line += f"  [suppressed: {member.suppressed}]"
        print(line)
    return EXIT_OK


def _remove(args: argparse.Namespace) -> int:
    with _setup(args) as (config, repository, now):
        campaign = config.campaign(args.name)
        text = args.customer.strip()
        customer_id: str | int = int(text) if text.isdigit() else text
        if isinstance(customer_id, int) and repository.get(customer_id) is None and repository.get(text) is not None:
            customer_id = text  # a text id that looks like a number
        removal = remove_from_campaign(campaign, customer_id, repository, now, reason=args.reason)
    if args.json:
        print_json({"campaign": removal.campaign, "customer": removal.customer_id, "stopped": list(removal.stopped)})
    elif removal.stopped:
        print(f"removed {removal.customer_id!r} from campaign {removal.campaign!r}:"
              f" {len(removal.stopped)} action(s) stopped ({', '.join(removal.stopped)})")
    else:
        print(f"removed {removal.customer_id!r} from campaign {removal.campaign!r}: no action was left to run")
    return EXIT_OK
