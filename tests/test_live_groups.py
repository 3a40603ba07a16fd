"""Groups follow the data: whatever the host wrote, and whoever wrote it, every read is right at its ``now``.

A hypothesis state machine interleaves writes (upserts, edits, new events, deletes, unsubscribes,
imports), rule changes, manual marks and moves of ``now`` with reads, on every backend, and checks
each read against a from-scratch evaluation of the same data at the same ``now``; the membership
history, replayed, must give the current members. Two processes sharing a database (one writes,
the other runs the cron) see each other's writes.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from cohorts import Customer, Event, Groups, MemoryRepository, Origin, import_file

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
IDS = [1, 2, 3, "c4", "c5", 6]
CITIES = ["Laval", "LAVAL", "Lévis", None, "Montréal"]
TAGS = [[], ["VIP"], ["vip", "gold"], ["gold"]]
RULES = {
    "Laval": ['customer.city = "laval"', 'customer.city in ["laval", "levis"]'],
    "Recent": [
        "visit.last_time within last 30 days",
        "visit.count(last 10 days) >= 1",
        "visit.sum(spent, last 10 days) >= 0.3",  # 0.1 + 0.2 is 0.3: a sum is exact
        "visit.max(spent) > 1 or visit.avg(spent, last 20 days) = 0.15",
    ],
    "VIP": ['customer.tags contains "vip"', 'customer.tags contains "gold" and customer.subscribed is not false'],
    "Both": [
        'customer in group "Laval" and customer in group "VIP"',
        'customer in group "Recent" or customer in group "VIP"',
    ],
}
ORDER = ["Laval", "Recent", "VIP", "Both"]  # "Both" reads the others


def _expected(
    customers: dict[Any, Customer], rules: dict[str, str], marks: dict[str, dict[str, set[Any]]], now: dt.datetime
) -> dict[str, dict[Any, frozenset[Origin]]]:
    """Every group's members and origins, evaluated from scratch with the in-memory reference."""
    reference = MemoryRepository(list(customers.values()))
    found: dict[str, dict[Any, frozenset[Origin]]] = {}
    for name in ORDER:
        matched = reference.select(rules[name], now, groups=lambda n: set(found[n]))
        members: dict[Any, frozenset[Origin]] = {}
        for cid in customers:
            if cid in marks[name]["excluded"]:
                continue
            origins = set()
            if cid in marks[name]["manual"]:
                origins.add(Origin.MANUAL)
            if cid in marks[name]["imported"]:
                origins.add(Origin.IMPORTED)
            if cid in matched:
                origins.add(Origin.RULES)
            if origins:
                members[cid] = frozenset(origins)
        found[name] = members
    return found


class LiveGroups(RuleBasedStateMachine):
    """Random writes, marks, rule changes and moves of ``now``; every read equals a fresh evaluation."""

    make: Callable[[], Any]
    tmp: Path

    def __init__(self) -> None:
        super().__init__()
        self.repository = self.make()
        self.now = NOW
        self.customers: dict[Any, Customer] = {}
        self.rules = {name: options[0] for name, options in RULES.items()}
        self.marks: dict[str, dict[str, set[Any]]] = {
            name: {"manual": set(), "imported": set(), "excluded": set()} for name in ORDER
        }
        setup = Groups(self.repository)
        for name in ORDER:
            setup.create(name, self.rules[name])
        self.imports = 0

    def groups(self) -> Groups:
        # Each step gets a new Groups, as a new request or cron run would: state lives in the repository.
        return Groups(self.repository)

    # -- writes through the repository, without any refresh

    @rule(cid=st.sampled_from(IDS), city=st.sampled_from(CITIES), tags=st.sampled_from(TAGS))
    def upsert(self, cid: Any, city: str | None, tags: list[str]) -> None:
        attributes: dict[str, Any] = {"tags": tags}
        if city is not None:
            attributes["city"] = city
        old = self.customers.get(cid)
        customer = Customer(cid, attributes, old.events if old else ())
        self.repository.upsert([customer])
        self.customers[cid] = customer

    @precondition(lambda self: self.customers)
    @rule(data=st.data(), days=st.integers(-40, 2), spent=st.sampled_from([None, 0.1, 0.2, 20, "n/a"]))
    def add_event(self, data: st.DataObject, days: int, spent: Any) -> None:
        cid = data.draw(st.sampled_from(sorted(self.customers, key=repr)))
        event = Event("visit", self.now + dt.timedelta(days=days, hours=1), {} if spent is None else {"spent": spent})
        self.repository.add_events(cid, [event])
        self.customers[cid] = self.customers[cid].with_events([event])

    @precondition(lambda self: self.customers)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.customers, key=repr)))
        assert self.repository.delete(cid) == 1
        del self.customers[cid]
        for kinds in self.marks.values():  # a deleted customer leaves every group, marks and all
            for ids in kinds.values():
                ids.discard(cid)

    @precondition(lambda self: self.customers)
    @rule(data=st.data())
    def unsubscribe(self, data: st.DataObject) -> None:
        cid = data.draw(st.sampled_from(sorted(self.customers, key=repr)))
        self.repository.unsubscribe(cid)
        self.customers[cid] = self.customers[cid].with_attributes(subscribed=False)

    @precondition(lambda self: self.imports < 3)
    @rule(cid=st.sampled_from(["c4", "c5", "7"]), city=st.sampled_from(["Laval", "Québec"]))
    def import_row(self, cid: str, city: str) -> None:  # a file's ids are text
        self.imports += 1
        path = self.tmp / f"import-{id(self)}-{self.imports}.csv"
        path.write_text(f"id,city\n{cid},{city}\n", encoding="utf-8")
        report = import_file(
            path, self.repository, group="VIP", match_on="id", new_attributes=["city"], now=self.now, policy="overwrite"
        )
        assert report.rejected == 0, report.rejects
        old = self.customers.get(cid)
        attributes = dict(old.attributes) if old else {}
        attributes["city"] = city
        self.customers[cid] = Customer(cid, attributes, old.events if old else ())
        self.marks["VIP"]["imported"].add(cid)

    # -- group state

    @rule(name=st.sampled_from(ORDER), which=st.integers(0, 3))
    def set_rule(self, name: str, which: int) -> None:
        chosen = RULES[name][which % len(RULES[name])]
        self.groups().set_rule(name, chosen)
        self.rules[name] = chosen

    @precondition(lambda self: self.customers)
    @rule(data=st.data(), name=st.sampled_from(ORDER), kind=st.sampled_from(["manual", "excluded"]), on=st.booleans())
    def mark(self, data: st.DataObject, name: str, kind: str, on: bool) -> None:
        cid = data.draw(st.sampled_from(sorted(self.customers, key=repr)))
        groups = self.groups()
        if kind == "manual":
            if on:
                groups.add(name, cid, now=self.now)
            else:
                groups.remove(name, cid, now=self.now)
                self.marks[name]["imported"].discard(cid)
        elif on:
            groups.exclude(name, cid, now=self.now)
        else:
            groups.unexclude(name, cid, now=self.now)
        if on:
            self.marks[name][kind].add(cid)
        else:
            self.marks[name][kind].discard(cid)

    @rule(hours=st.sampled_from([1, 7, 24, 24 * 5, 24 * 11, 24 * 31]))
    def later(self, hours: int) -> None:
        self.now += dt.timedelta(hours=hours)

    # -- every read is right

    @invariant()
    def reads_are_right(self) -> None:
        expected = _expected(self.customers, self.rules, self.marks, self.now)
        groups = self.groups()
        for name in ORDER:
            assert dict(groups.members(name, self.now)) == expected[name], name
        for cid in list(self.customers)[:2]:
            want = {name: expected[name][cid] for name in ORDER if cid in expected[name]}
            assert dict(groups.groups_of(cid, self.now)) == want
        for name in ORDER[:1]:
            assert groups.count(name, self.now) == len(expected[name])

    @invariant()
    def history_replays_to_the_members(self) -> None:
        groups = self.groups()
        for name in ("Laval", "VIP"):
            last: dict[Any, Any] = {}
            for entry in groups.history(name):
                last[(type(entry.customer_id), entry.customer_id)] = entry
            replayed = {key[1]: entry.origins for key, entry in last.items() if entry.joined}
            assert replayed == dict(groups.members(name, self.now)), name


@pytest.mark.parametrize("backend", ["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_every_read_equals_a_fresh_evaluation(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Random interleavings of writes, marks, rule changes and time: each read is the from-scratch answer."""
    from cohorts.sql import SQLRepository

    def make() -> Any:
        if backend == "memory":
            return MemoryRepository()
        if backend == "sqlite":
            return SQLRepository("sqlite://")
        engine = request.getfixturevalue("postgres_engine")
        with engine.begin() as conn:  # each example starts from empty tables
            for (table,) in conn.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'cohorts_%%'"
            ):
                conn.exec_driver_sql(f'DROP TABLE "{table}" CASCADE')
        return SQLRepository(engine)

    machine = type("Machine", (LiveGroups,), {"make": staticmethod(make), "tmp": tmp_path})
    examples = {"memory": 40, "sqlite": 25, "postgresql": 15}[backend]
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=14,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )


def test_a_write_is_seen_without_refresh_by_a_new_groups_object() -> None:
    """The issue's cases, one by one: upsert, edit, new event, unsubscribe, delete; no refresh anywhere."""
    repo = MemoryRepository([Customer(1, {"city": "Laval"})])
    subscribed = "(customer.subscribed is unknown or customer.subscribed = true)"
    Groups(repo).create("Laval", f'customer.city = "laval" and {subscribed}')
    Groups(repo).create("Booked", "appointment.count >= 1")
    assert set(Groups(repo).members("Laval", NOW)) == {1}
    repo.upsert([Customer(2, {"city": "LAVAL"})])
    assert set(Groups(repo).members("Laval", NOW)) == {1, 2}
    repo.upsert([Customer(1, {"city": "Québec"})])
    assert set(Groups(repo).members("Laval", NOW)) == {2}
    repo.add_events(2, [Event("appointment", NOW)])
    assert set(Groups(repo).members("Booked", NOW)) == {2}
    repo.unsubscribe(2)
    assert set(Groups(repo).members("Laval", NOW)) == set()
    repo.delete(2)
    assert Groups(repo).count("Booked", NOW) == 0
    causes = [(e.customer_id, e.joined, e.cause) for e in Groups(repo).history()]
    assert causes == [
        (1, True, "rule"),
        (2, True, "data"),
        (1, False, "data"),
        (2, True, "data"),
        (2, False, "data"),
        (2, False, "deleted"),
    ]


def test_sizes_follow_the_history() -> None:
    """``sizes`` gives one row per step, from the joins and leaves in the history."""
    repo = MemoryRepository([Customer(1, {"city": "Laval"})])
    groups = Groups(repo)
    groups.create("Laval", 'customer.city = "laval"')
    groups.members("Laval", NOW)
    repo.upsert([Customer(2, {"city": "Laval"})])
    groups.members("Laval", NOW + dt.timedelta(days=1))
    repo.delete(1)
    groups.members("Laval", NOW + dt.timedelta(days=2))
    rows = groups.sizes("Laval", NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=3))
    assert [row["members"] for row in rows] == [0, 1, 2, 1, 1]
    assert rows[0]["at"] == NOW - dt.timedelta(days=1)


def test_a_rolled_back_write_is_not_seen() -> None:
    """A write in a transaction that rolls back leaves no change behind."""
    repo = MemoryRepository([Customer(1, {"city": "Laval"})])
    Groups(repo).create("Laval", 'customer.city = "laval"')
    assert Groups(repo).count("Laval", NOW) == 1
    with pytest.raises(RuntimeError), repo.transaction():
        repo.upsert([Customer(2, {"city": "Laval"})])
        raise RuntimeError("crash")
    assert Groups(repo).count("Laval", NOW) == 1
    assert [e.customer_id for e in Groups(repo).history()] == [1]


_WRITER = textwrap.dedent(
    """
    import sys
    from cohorts import Customer, Event
    from cohorts.sql import SQLRepository

    repo = SQLRepository(sys.argv[1])
    repo.upsert([Customer(i, {"city": "Laval" if i % 2 else "Québec"}) for i in range(10, 20)])
    repo.upsert([Customer(1, {"city": "Québec"})])  # leaves
    repo.delete(3)
    repo.add_events(12, [Event("appointment", "2026-11-20")])
    repo.close()
    """
)
_CRON = textwrap.dedent(
    """
    import datetime as dt, json, sys
    from cohorts import Campaign, Action, Groups, run_campaigns
    from cohorts.sql import SQLRepository

    repo = SQLRepository(sys.argv[1])
    now = dt.datetime(2026, 11, 22, 12, tzinfo=dt.timezone.utc)
    reached = []
    campaign = Campaign("Hello Laval", group="Laval", start=now - dt.timedelta(days=1),
                        end=now + dt.timedelta(days=1), actions=[Action("track", id="hello")])
    run_campaigns([campaign], repo, Groups(repo), {"track": lambda c, a, k: reached.append(c.id)}, now)
    print(json.dumps(sorted(reached)))
    repo.close()
    """
)


def _two_processes(url: str) -> list[int]:
    from cohorts.sql import SQLRepository

    repo = SQLRepository(url)
    repo.upsert([Customer(i, {"city": "Laval"}) for i in range(1, 5)])
    Groups(repo).create("Laval", 'customer.city = "laval"')
    assert Groups(repo).count("Laval", NOW) == 4
    repo.close()
    subprocess.run([sys.executable, "-c", _WRITER, url], check=True, timeout=120)
    out = subprocess.run([sys.executable, "-c", _CRON, url], check=True, timeout=120, capture_output=True, text=True)
    return [int(i) for i in __import__("json").loads(out.stdout)]


def test_two_processes_on_a_sqlite_file(tmp_path: Path) -> None:
    """One process writes (no refresh), another runs the cron: it reaches exactly the customers who match."""
    assert _two_processes(f"sqlite:///{tmp_path / 'shared.db'}") == [2, 4, 11, 13, 15, 17, 19]


@pytest.mark.postgres
def test_two_processes_on_postgresql(postgres_url: str) -> None:
    """The same with PostgreSQL: the cron sees the other process's committed writes."""
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS live CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA live")
    engine.dispose()
    url = postgres_url + ("&" if "?" in postgres_url else "?") + "options=-csearch_path%3Dlive"
    assert _two_processes(url) == [2, 4, 11, 13, 15, 17, 19]
