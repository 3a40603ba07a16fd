"""Type-checked by mypy, never run: the public API as a host application uses it."""

import datetime as dt
from collections.abc import Iterable, Iterator
from pathlib import Path

import cohorts
from cohorts.campaigns import JoinHistory
from cohorts.repository import CustomerReader, CustomerWriter, StateStore

rule: cohorts.Rule = cohorts.parse('customer.city = "Laval"')
predicate: cohorts.Predicate = cohorts.compile(rule, schema=cohorts.default_schema(), tz="America/Montreal")
ok: bool = predicate(cohorts.Customer(1, {"city": "Laval"}), now=dt.datetime.now(dt.UTC))
why: cohorts.Explanation = cohorts.explain(rule, cohorts.Customer(1))

# Both repositories are Repository (the three protocols), so every service takes them.
memory: cohorts.Repository = cohorts.MemoryRepository()
sql: cohorts.Repository = cohorts.SQLRepository("sqlite://")
reader: CustomerReader = memory
writer: CustomerWriter = sql
state: StateStore = memory

groups = cohorts.Groups(sql, history=dt.timedelta(days=30))
members: dict[cohorts.CustomerId, frozenset[cohorts.Origin]] = dict(groups.members("VIP"))
history: list[cohorts.HistoryEntry] = groups.history("VIP", start=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
joined: bool = history[0].joined
cause: str = history[0].cause
sizes: list[dict[str, object]] = list(groups.sizes("VIP", dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1)))
changed: tuple[list[cohorts.CustomerId], str] = sql.changes_since(sql.change_position())

report: cohorts.ImportReport = cohorts.import_file(Path("customers.csv"), memory, group="Imported")
campaign = cohorts.Campaign("Spring", group="VIP", actions=[cohorts.Action("track")])
run: cohorts.RunReport = cohorts.run_campaigns([campaign], sql, groups, {}, dt.datetime.now(dt.UTC))
audience: cohorts.Audience = cohorts.audience(campaign, reader, groups)
welcome = cohorts.Campaign("Welcome", group="VIP", start=dt.date(2026, 12, 1), trigger="joined")
with_history: JoinHistory = groups  # what trigger="joined" reads of groups


class Incomplete:
    """A store that reads but cannot hold group state: mypy refuses it where a Repository is needed."""

    def __iter__(self) -> Iterator[cohorts.Customer]:
        return iter(())

    def upsert(self, customers: Iterable[cohorts.Customer]) -> None: ...


cohorts.Groups(Incomplete())  # type: ignore[arg-type]
