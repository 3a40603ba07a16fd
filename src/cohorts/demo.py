"""``cohorts demo``: the bundled sample and the reference articles' scenarios, end to end.

The demo generates the sample customers (:mod:`cohorts.sample`), evaluates
every scenario of the reference articles in memory, prints each rule with its
match count and one explained match, then loads the same customers into a SQL
database (SQLite in the demo folder by default, or ``--db URL``) and checks
that the database selects exactly the same customers. On that database it then
creates the articles' groups (with a manual addition and an exclusion), imports
a bundled spreadsheet with a bad row into a group, runs one campaign cycle with a
recording sender (and runs it again to show nothing is sent twice), and prints a
report by group.

Each part is a step: a function of the :class:`DemoContext` that prints what it
did. :data:`STEPS` runs in order; a failed check makes :func:`run` return 1.
"""

from __future__ import annotations

import datetime as dt
import importlib
import shlex
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path as FilePath
from typing import Any, TextIO

import attrs

from ._docs import page
from .campaigns import Action, Campaign, Message, run_campaigns, standard_handlers
from .errors import DatabaseError
from .evaluate import compile, explain  # noqa: A004 - cohorts.compile, not the builtin
from .groups import Groups, Origin
from .importers import ImportReport, import_file
from .model import Customer, CustomerId
from .reports import report
from .repository import MemoryRepository, Repository
from .sample import SAMPLE_NOW, SAMPLE_SEED, SAMPLE_SIZE, SCENARIOS, sample_customers, sample_schema, write_jsonl
from .schema import Schema

__all__ = ["STEPS", "DemoContext", "run"]


@attrs.define
class DemoContext:
    """What the demo's steps share.

    Attributes:
        out: where the demo prints.
        now: the moment every rule is evaluated at.
        size: how many sample customers.
        folder: the demo's folder (database, JSON-lines copy of the sample).
        db: the database URL, or None for SQLite in ``folder``.
        sql: False to skip the SQL database.
        customers: the sample customers (filled by the first step).
        schema: the sample schema.
        memory: each scenario's rule and the ids it selects in memory.
        repository: the SQL repository, once loaded (a memory one when SQL is skipped).
        groups: the demo's groups, once created.
        imported: the import report, once the spreadsheet is imported.
        problems: checks that failed; the demo exits with 1 when there are any.
    """

    out: TextIO
    now: dt.datetime
    size: int
    folder: FilePath
    db: str | None = None
    sql: bool = True
    customers: list[Customer] = attrs.field(factory=list)
    schema: Schema = attrs.field(factory=sample_schema)
    memory: dict[str, set[CustomerId]] = attrs.field(factory=dict)
    repository: Repository | None = None
    groups: Groups | None = None
    imported: ImportReport | None = None
    problems: list[str] = attrs.field(factory=list)

    def say(self, text: str = "") -> None:
        """Print one line (or several) of the demo."""
        print(text, file=self.out)

    def title(self, text: str) -> None:
        """Print a section title."""
        self.say()
        self.say(text)
        self.say("=" * len(text))

    @contextmanager
    def timed(self, what: str) -> Iterator[None]:
        """Print how long the block took."""
        start = time.perf_counter()
        yield
        self.say(f"  ({what} in {time.perf_counter() - start:.2f} s)")


def _name(customer: Customer) -> str:
    attributes = customer.attributes
    name = " ".join(str(attributes[k]) for k in ("first_name", "last_name") if attributes.get(k))
    city = attributes.get("city")
    return f"{customer.id} {name}" + (f", {city}" if city else "")


def _customers(count: int) -> str:
    return f"{count:,} customer" + ("" if count == 1 else "s")


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


def step_sample(ctx: DemoContext) -> None:
    """Generate the sample and keep a JSON-lines copy in the demo folder."""
    ctx.title("The sample")
    start = time.perf_counter()
    ctx.customers = sample_customers(ctx.size, now=ctx.now, seed=SAMPLE_SEED)
    events = sum(len(c.events) for c in ctx.customers)
    path = ctx.folder / "customers.jsonl"
    write_jsonl(ctx.customers, path)
    ctx.say(
        f"{len(ctx.customers):,} customers of a car dealership and insurance agency, {events:,} events "
        f"(seed {SAMPLE_SEED}, as of {ctx.now.isoformat()}), generated in {time.perf_counter() - start:.2f} s."
    )
    ctx.say(f"A copy for `cohorts eval`: {path}")


def step_scenarios(ctx: DemoContext) -> None:
    """Evaluate every scenario in memory; print its count and explain one match."""
    ctx.title("The reference articles' scenarios, in memory")
    start = time.perf_counter()
    by_id = {c.id: c for c in ctx.customers}
    for number, scenario in enumerate(SCENARIOS, start=1):
        predicate = compile(scenario.rule, schema=ctx.schema)
        ids = list(predicate.select(ctx.customers, ctx.now))
        ctx.memory[scenario.rule] = set(ids)
        ctx.say()
        ctx.say(f"{number:2}. {scenario.name}: {_customers(len(ids))}")
        ctx.say(f"    {scenario.rule}")
        if ids:
            customer = by_id[ids[0]]
            ctx.say(f"    for example {_name(customer)}:")
            ctx.say(_indent(str(explain(scenario.rule, customer, ctx.now, schema=ctx.schema)), 6))
    ctx.say()
    ctx.say(f"  ({len(SCENARIOS)} rules over {len(ctx.customers):,} customers in {time.perf_counter() - start:.2f} s)")


def _sql_module() -> Any:
    try:
        return importlib.import_module("cohorts.sql")
    except ModuleNotFoundError as error:
        if error.name == "cohorts.sql" or (error.name or "").split(".")[0] in ("sqlalchemy", "psycopg"):
            return None
        raise


def step_sql(ctx: DemoContext) -> None:
    """Load the sample into a SQL database and check it selects what memory selects."""
    if not ctx.sql:
        return
    ctx.title("The same scenarios in a SQL database")
    module = _sql_module()
    repository_class = getattr(module, "SQLRepository", None)
    if repository_class is None:
        ctx.say("Skipped: this installation has no SQL repository (cohorts.sql.SQLRepository).")
        ctx.say("Install the sql extra for it: pip install 'cohorts[sql]' ('cohorts[postgres]' for PostgreSQL).")
        return
    if ctx.db is None:
        path = ctx.folder / "customers.db"
        path.unlink(missing_ok=True)  # a fresh database each run
        url = f"sqlite:///{path}"
        ctx.say(f"SQLite database: {path}")
    else:
        url = ctx.db
        ctx.say(f"Database: {_hide_password(url)}")
    ours = {c.id for c in ctx.customers}
    others = 0
    with ctx.timed(f"loaded {len(ctx.customers):,} customers"):
        repository = _open(repository_class, url, ctx.schema)
        ctx.repository = repository
        if ctx.db is not None:
            stored = repository.ids()
            stale = sorted(ours & stored, key=str)
            if stale:
                repository.delete(*stale)
            others = len(stored - ours)
        repository.upsert(ctx.customers)
    if others:
        ctx.say(f"  ({others:,} other customers in this database are left out of the comparison)")
    start = time.perf_counter()
    ctx.say()
    ctx.say(f"  {'memory':>7} {'SQL':>7}  scenario")
    for number, scenario in enumerate(SCENARIOS, start=1):
        expected = ctx.memory.get(scenario.rule)
        if expected is None:
            expected = set(compile(scenario.rule, schema=ctx.schema).select(ctx.customers, ctx.now))
        got = set(repository.select(scenario.rule, now=ctx.now)) & ours
        verdict = "" if got == expected else "   <-- DIFFERENT"
        ctx.say(f"  {len(expected):>7,} {len(got):>7,}  {number:2}. {scenario.name}{verdict}")
        if got != expected:
            missing, extra = sorted(map(str, expected - got)), sorted(map(str, got - expected))
            ctx.problems.append(
                f"SQL and memory disagree on {scenario.name!r}: only in memory {missing[:5]}, only in SQL {extra[:5]}"
            )
    ctx.say(f"  ({len(SCENARIOS)} queries in {time.perf_counter() - start:.2f} s)")
    if not ctx.problems:
        ctx.say("The database and memory select exactly the same customers for every scenario.")


def _open(repository_class: Any, url: str, schema: Schema) -> Any:
    """The SQL repository at ``url``; a database that cannot be opened is a DatabaseError."""
    import sqlalchemy.exc

    try:
        return repository_class(url, schema=schema)
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DatabaseError(_hide_password(url), reason) from error


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def _command() -> str:
    """How to call the ``cohorts`` command from where the user is."""
    launched = FilePath(sys.argv[0]) if sys.argv and sys.argv[0] else None
    found = shutil.which("cohorts")
    if launched is not None and launched.name == "cohorts":
        if found and FilePath(found).resolve() == launched.resolve():
            return "cohorts"
        return shlex.quote(str(launched))
    return "cohorts" if found else f"{shlex.quote(sys.executable)} -m cohorts"


def step_try(ctx: DemoContext) -> None:
    """Suggest commands to try next, on the demo's copy of the sample."""
    ctx.title("Try it yourself")
    command = _command()
    data = shlex.quote(str(ctx.folder / "customers.jsonl"))
    now = shlex.quote(ctx.now.isoformat())
    claim = "claim.filed.at within last 3 months"
    explained = sorted(ctx.memory.get(claim, ()), key=str)[:1] or [ctx.customers[0].id if ctx.customers else "c0001"]
    vip, claim, typo = (
        shlex.quote(rule)
        for rule in ('customer.tags contains "VIP"', claim, 'customer.vehicle_modle contains "Escape"')
    )
    ctx.say(f"{command} eval {vip} {data} --now {now} --count")
    ctx.say(f"{command} eval {claim} {data} --now {now} --explain {shlex.quote(str(explained[0]))}")
    ctx.say(f"{command} check {typo}")
    ctx.say(f"The language: {page('language.md')}")
    ctx.say(f"The command: {page('cli.md')}")


# -- groups, import, campaign and report: the product around the rules ----------------------------------------

#: The groups the demo creates: the reference articles' examples, a group of groups, and an empty group
#: that the import fills.
DEMO_GROUPS: tuple[tuple[str, str | None, str], ...] = (
    (
        "Escape service",
        'repair_order.closed.last_time < 730 days ago AND customer.vehicle_model contains "Escape"',
        "Escape owners whose car was serviced in the last two years",
    ),
    ("January renewals", "customer.`Date de renouvellement`.month = january", "insurance renewal in January"),
    ("VIP", 'customer.tags contains "VIP"', "VIP customers"),
    ("Do not contact", "customer.subscribed is false", "asked not to receive campaigns"),
    (
        "Escape mailing",
        'customer in group "Escape service" AND customer not in group "Do not contact"',
        "a group of groups",
    ),
    ("Spring clinic", None, "filled by the spreadsheet import"),
)

#: The spreadsheet the demo imports (a bundled export with one bad row).
SAMPLE_IMPORT = FilePath(__file__).parent / "data" / "sample_import.csv"


@attrs.define
class RecordingSender:
    """A stand-in for an email/SMS provider: it records messages, keyed by idempotency key, as a provider would."""

    sent: dict[str, Message] = attrs.field(factory=dict)

    def send(self, message: Message) -> None:
        """Record ``message``; a repeated key is delivered once."""
        self.sent.setdefault(message.idempotency_key, message)


def _workspace(ctx: DemoContext) -> Any:
    """The repository the product steps use: the SQL one when it was loaded, memory otherwise."""
    if ctx.repository is None:
        ctx.repository = MemoryRepository(ctx.customers, schema=ctx.schema)
    return ctx.repository


def _origin_counts(members: Mapping[CustomerId, frozenset[Origin]]) -> str:
    counts = Counter(origin for found in members.values() for origin in found)
    return ", ".join(f"{origin.value} {counts[origin]:,}" for origin in Origin if counts[origin]) or "-"


def step_groups(ctx: DemoContext) -> None:
    """Create the articles' groups, add and exclude by hand, refresh, and explain memberships."""
    ctx.title("Customer groups")
    repository = _workspace(ctx)
    groups = Groups(repository)
    ctx.groups = groups
    start = time.perf_counter()
    existing = {n.casefold() for n in groups.names()}
    for name, _, _ in reversed(DEMO_GROUPS):  # a database kept from an earlier run: groups of groups go first
        if name.casefold() in existing:
            groups.delete(name, force=True)
    for name, rule, description in DEMO_GROUPS:
        groups.create(name, rule, description)
    changes = groups.refresh(now=ctx.now)
    ctx.say(f"{len(DEMO_GROUPS)} groups created; the first refresh made {len(changes):,} memberships "
            f"in {time.perf_counter() - start:.2f} s.")
    vip = groups.members("VIP", ctx.now)
    outsider = next(c.id for c in ctx.customers if c.id not in vip)
    unwanted = min(vip, key=str)
    groups.add("VIP", outsider, now=ctx.now)
    groups.exclude("VIP", unwanted, now=ctx.now)
    ctx.say(f"By hand: {outsider} added to VIP (whatever the rules say); {unwanted} excluded from VIP.")
    ctx.say()
    ctx.say(f"  {'members':>8}  {'group':<18} origins")
    for name in groups.names():
        members = groups.members(name, ctx.now)
        ctx.say(f"  {len(members):>8,}  {name:<18} {_origin_counts(members)}")
    mailing = sorted(groups.members("Escape mailing", ctx.now), key=str)
    if mailing:
        ctx.say()
        ctx.say("Why is this customer in the group of groups?")
        ctx.say(_indent(str(groups.why("Escape mailing", mailing[0], ctx.now)), 2))
    ctx.say()
    ctx.say("And why not this one?")
    ctx.say(_indent(str(groups.why("VIP", unwanted, ctx.now)), 2))


def step_import(ctx: DemoContext) -> None:
    """Import the bundled spreadsheet (one row's phone number is too short) into a group."""
    ctx.title("Importing a spreadsheet")
    repository = _workspace(ctx)
    report = import_file(SAMPLE_IMPORT, repository, group="Spring clinic", region="CA")
    ctx.imported = report
    ctx.say(str(report))
    if report.rejects:
        rejects = ctx.folder / "rejects.csv"
        report.write_rejects(rejects)
        ctx.say(f"The rejected rows, with their reasons, ready to fix and re-import: {rejects}")
    if ctx.groups is not None:
        members = ctx.groups.members("Spring clinic", ctx.now)
        ctx.say(f"Spring clinic now has {_customers(len(members))} ({_origin_counts(members)}).")
        expected = report.created + report.updated + report.merged
        if len(members) != expected:
            ctx.problems.append(f"the import reported {expected} customers but the group has {len(members)}")


def demo_campaigns(now: dt.datetime) -> list[Campaign]:
    """The demo's campaigns: one at a rules group filtered on status, one at the imported group."""
    return [
        Campaign(
            "Escape service reminder",
            group="Escape service",
            status="active",
            published=True,
            start=now - dt.timedelta(days=7),
            end=now + dt.timedelta(days=30),
            actions=[Action("email", {"subject": "Time for your Escape's service"}), Action("points", {"points": 50})],
        ),
        Campaign(
            "Spring clinic welcome",
            group="Spring clinic",
            published=True,
            start=now - dt.timedelta(days=1),
            end=now + dt.timedelta(days=60),
            actions=[Action("sms", {"body": "See you at the spring clinic!"}), Action("stage", {"stage": "invited"})],
        ),
        Campaign("Winter tires", group="VIP", published=False, actions=[Action("email")]),
    ]


def step_campaigns(ctx: DemoContext) -> None:
    """Run one cron cycle with a recording sender, then run it again: nothing is sent twice."""
    ctx.title("A campaign run (the cron job)")
    repository = _workspace(ctx)
    sender = RecordingSender()
    campaigns = demo_campaigns(ctx.now)
    handlers = standard_handlers(repository, sender)
    first = run_campaigns(campaigns, repository, ctx.groups, handlers, ctx.now)
    ctx.say(str(first))
    ctx.say(f"The recording sender holds {len(sender.sent):,} messages "
            f"({_count_by(m.channel for m in sender.sent.values())}).")
    if not sender.sent and any(c.audience and not c.added for c in first.campaigns):
        ctx.say("(this database ran these campaigns before: each action runs once per customer, ever)")
    suppressed = {reason: n for c in first.campaigns for reason, n in c.suppressed_reasons.items()}
    if suppressed:
        ctx.say("Suppressed, not dropped: " + ", ".join(f"{n:,} {reason}" for reason, n in suppressed.items()))
    again = run_campaigns(campaigns, repository, ctx.groups, handlers, ctx.now + dt.timedelta(hours=1))
    ctx.say()
    ctx.say("The same job an hour later:")
    ctx.say(str(again))
    repeated = sum(c.done for c in again.campaigns)
    ctx.say(f"Actions repeated: {repeated} (each runs exactly once per customer).")
    if repeated:
        ctx.problems.append(f"the second campaign run repeated {repeated} actions")
    if not first.ok:
        failures = "; ".join(str(f) for c in first.campaigns for f in c.failures)
        ctx.problems.append(f"the campaign run failed: {failures}")


def _count_by(values: Iterable[str]) -> str:
    return ", ".join(f"{n:,} {value}" for value, n in sorted(Counter(values).items())) or "none"


def step_report(ctx: DemoContext) -> None:
    """Report by group: customers, and invoice totals of the last year (a customer counts in each of its groups)."""
    if ctx.groups is None:
        return
    ctx.title("Report by group")
    start = ctx.now - dt.timedelta(days=365)
    ctx.say(str(report(ctx.groups, "sum(invoice.total)", start=start, end=ctx.now, now=ctx.now)))
    ctx.say("(invoice totals of the last 12 months; a customer in several groups counts in each)")


STEPS: list[Callable[[DemoContext], None]] = [
    step_sample,
    step_scenarios,
    step_sql,
    step_groups,
    step_import,
    step_campaigns,
    step_report,
    step_try,
]
"""The demo's steps, in order."""


def run(
    *,
    db: str | None = None,
    directory: str | FilePath | None = None,
    size: int | None = None,
    sql: bool = True,
    now: dt.datetime = SAMPLE_NOW,
    out: TextIO | None = None,
) -> int:
    """Run the demo; returns the exit code (0, or 1 when a check failed).

    ``directory`` is the demo folder (created if needed; default: a new
    temporary folder, which is kept and named so you can look at it).
    """
    stream = out if out is not None else sys.stdout
    if directory is None:
        folder = FilePath(tempfile.mkdtemp(prefix="cohorts-demo-"))
    else:
        folder = FilePath(directory)
        folder.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(stream, now, SAMPLE_SIZE if size is None else size, folder.resolve(), db, sql)
    start = time.perf_counter()
    ctx.say(f"cohorts demo: folder {ctx.folder}")
    try:
        for step in STEPS:
            step(ctx)
    finally:
        close = getattr(ctx.repository, "close", None)
        if callable(close):
            close()  # the SQL repository's connections
    ctx.say()
    if ctx.problems:
        for problem in ctx.problems:
            ctx.say(f"PROBLEM: {problem}")
        ctx.say(f"Demo finished with {len(ctx.problems)} problem(s) in {time.perf_counter() - start:.1f} s.")
        return 1
    ctx.say(f"Demo finished in {time.perf_counter() - start:.1f} s.")
    return 0
