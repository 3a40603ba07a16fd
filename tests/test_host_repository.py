"""HostRepository: the host's own tables as a full repository (groups, campaigns, reports), read in place.

- The customers it reads are the host's rows as the in-memory reference reads them (random rows
  of host-shaped tables on SQLite and PostgreSQL), and its ``select`` agrees with theirs.
- Groups over it follow the host's own writes: a state machine writes the host's tables directly,
  as a web app would, on SQLite and PostgreSQL, seen through ``updated_at`` watermarks (deletes
  told with ``changed``) or through installed triggers (nothing told), and checks every read
  against a from-scratch evaluation.
- Writes to customers go through the host's writer, or are refused before anything runs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings, stateful
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from cohorts import (
    Action,
    Campaign,
    Customer,
    Event,
    Groups,
    HostEvents,
    HostRepository,
    HostTable,
    HostWriteError,
    HostWriter,
    JsonField,
    MemoryRepository,
    SQLRepository,
    audience,
    import_file,
    report,
    run_campaigns,
    standard_handlers,
)

from . import test_host_table as shapes
from .strategies import NOW, groups
from .test_live_groups import CITIES, IDS, TAGS, LiveGroups

sa = pytest.importorskip("sqlalchemy")


def _events_key(customer: Customer) -> list[str]:
    return sorted(repr((e.name, e.at, sorted(e.attributes.items()))) for e in customer.events)


# -- the customers it reads are the host's rows ---------------------------------------------


@shapes.DIFFERENTIAL
@given(data=st.data())
def test_customers_are_the_host_rows(host_engine: Any, data: st.DataObject) -> None:
    """get, get_many, iteration and select give what the reference reads from the same rows."""
    pg = host_engine.dialect.name == "postgresql"
    ids = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=6, unique=True), label="ids")
    clients = {i: data.draw(shapes.client_rows(pg), label=f"client {i}") for i in ids}
    events = data.draw(shapes.event_rows(pg, ids), label="events")
    drawn = data.draw(st.lists(shapes.host_rules, min_size=1, max_size=3), label="rules")
    rules = [r for r in drawn if shapes._valid(r, pg)]
    assume(rules)
    table = shapes.host("UTC")
    with host_engine.begin() as conn:
        shapes._fill(conn, pg, clients, events)
        expected = shapes.reference(conn, table)
    repository = HostRepository(host_engine, table, state_prefix="cohorts_state_")
    assert len(repository) == len(ids)
    assert repository.ids() == set(ids)
    assert repository.existing([*ids, 99, "1"]) == set(ids)
    got = {c.id: c for c in repository}
    assert set(got) == set(ids)
    many = repository.get_many([*ids, 99])
    names = sorted(table.events)[:1]  # the events of one name only: the other tables are not read
    some = repository.get_many_reading([*ids, 99], names)
    assert set(some) == set(ids)
    for cid in ids:
        want = expected.get(cid)
        assert want is not None
        for found in (got[cid], many[cid], repository.get(cid)):
            assert found is not None
            assert dict(found.attributes) == dict(want.attributes), cid
            assert _events_key(found) == _events_key(want), cid
        assert dict(some[cid].attributes) == dict(want.attributes), cid
        only = Customer(cid, want.attributes, [e for e in want.events if e.name in names])
        assert _events_key(some[cid]) == _events_key(only), cid
    for rule in rules:
        want_ids = expected.select(rule, NOW, groups=groups)
        assert repository.select(rule, NOW, groups=groups) == want_ids, str(rule)
        assert repository.count(rule, NOW, groups=groups) == len(want_ids), str(rule)
        assert MemoryRepository(list(got.values()), tz="UTC").select(rule, NOW, groups=groups) == want_ids


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def host_engine(request: pytest.FixtureRequest) -> Any:
    """The host-shaped tables of test_host_table, empty, on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
        ddl = shapes.SQLITE_DDL
    else:
        engine = request.getfixturevalue("postgres_engine")
        ddl = shapes.PG_DDL
    with engine.begin() as conn:
        for statement in ddl:
            conn.exec_driver_sql(statement)
    return engine


# -- a host app: its own tables, its own writes --------------------------------------------

PEOPLE_DDL = {
    "sqlite": [
        "CREATE TABLE people (pid PRIMARY KEY, doc TEXT NOT NULL, modified INTEGER NOT NULL)",
        "CREATE TABLE visits (id INTEGER PRIMARY KEY, pid, at TEXT NOT NULL, note TEXT, details TEXT,"
        " modified INTEGER NOT NULL)",
    ],
    "postgresql": [
        "CREATE TABLE people (pid TEXT PRIMARY KEY, doc JSONB NOT NULL, modified BIGINT NOT NULL)",
        "CREATE TABLE visits (id SERIAL PRIMARY KEY, pid TEXT, at TIMESTAMPTZ NOT NULL, note TEXT, details JSONB,"
        " modified BIGINT NOT NULL)",
    ],
}
PEOPLE = HostTable(
    "people",
    id="pid",
    columns={
        "city": JsonField("doc", "city"),
        "tags": JsonField("doc", "tags"),
        "subscribed": JsonField("doc", "subscribed"),
        "points": JsonField("doc", "points"),
        "stage": JsonField("doc", "stage"),
    },
    events={
        "visit": HostEvents(
            "visits",
            customer="pid",
            at="at",
            where={"note": None},
            fields={"spent": JsonField("details", "spent")},
            updated_at="modified",
        ),
        "campaign.points": HostEvents("visits", customer="pid", at="at", where={"note": "points"}),
    },
    updated_at="modified",
)


def _people(engine: Any) -> None:
    with engine.begin() as conn:
        for statement in PEOPLE_DDL[engine.dialect.name]:
            conn.exec_driver_sql(statement)


class DocWriter:
    """The host's writer: attributes in the JSON document ``doc``, events as rows of ``visits``."""

    def __init__(self) -> None:
        self.tick = 0
        self.calls: list[str] = []

    def _next(self) -> int:
        self.tick += 1
        return self.tick

    def _doc(self, conn: sa.Connection, customer_id: Any) -> dict[str, Any] | None:
        raw = conn.execute(sa.text("SELECT doc FROM people WHERE pid = :p"), {"p": customer_id}).scalar()
        return None if raw is None else json.loads(raw) if isinstance(raw, str) else dict(raw)

    def put(self, conn: sa.Connection, customer: Customer) -> None:
        doc = json.dumps(dict(customer.attributes))
        params = {"p": customer.id, "d": doc, "m": self._next()}
        if self._doc(conn, customer.id) is None:
            conn.execute(sa.text("INSERT INTO people (pid, doc, modified) VALUES (:p, :d, :m)"), params)
        else:
            conn.execute(sa.text("UPDATE people SET doc = :d, modified = :m WHERE pid = :p"), params)

    def insert(self, conn: sa.Connection, customer: Customer) -> None:
        self.calls.append(f"insert {customer.id}")
        self.put(conn, customer)
        self.add_events(conn, customer.id, customer.events)

    def update(self, conn: sa.Connection, customer_id: Any, values: Mapping[str, Any]) -> None:
        self.calls.append(f"update {customer_id} {sorted(values)}")
        doc = self._doc(conn, customer_id) or {}
        doc.update(values)
        self.put(conn, Customer(customer_id, {k: v for k, v in doc.items() if v is not None}))

    def add_events(self, conn: sa.Connection, customer_id: Any, events: Sequence[Event]) -> None:
        rows = []
        for event in events:
            self.calls.append(f"event {customer_id} {event.name}")
            note = None if event.name == "visit" else event.name.removeprefix("campaign.")
            details = json.dumps(dict(event.attributes))
            rows.append({"p": customer_id, "a": event.at.isoformat(), "n": note, "d": details, "m": self._next()})
        if rows:
            conn.execute(
                sa.text("INSERT INTO visits (pid, at, note, details, modified) VALUES (:p, :a, :n, :d, :m)"), rows
            )

    def delete(self, conn: sa.Connection, customer_ids: Sequence[Any]) -> None:
        for customer_id in customer_ids:
            conn.execute(sa.text("DELETE FROM visits WHERE pid = :p"), {"p": customer_id})
            conn.execute(sa.text("DELETE FROM people WHERE pid = :p"), {"p": customer_id})


class HostApp:
    """The host's code writing its own tables, not through cohorts (only a delete is told with ``changed``);
    everything else is the HostRepository's."""

    def __init__(self, repository: HostRepository, writer: DocWriter, *, tell_deletes: bool = True) -> None:
        self.repository = repository
        self.writer = writer
        self.tell_deletes = tell_deletes  # False: triggers see the deletes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.repository, name)

    def __iter__(self) -> Iterator[Customer]:
        return iter(self.repository)

    def __len__(self) -> int:
        return len(self.repository)

    def upsert(self, customers: Sequence[Customer]) -> None:
        with self.repository.connect() as conn:
            for customer in customers:
                self.writer.put(conn, customer)

    def add_events(self, customer_id: Any, events: Sequence[Event]) -> None:
        with self.repository.connect() as conn:
            self.writer.add_events(conn, customer_id, events)

    def delete(self, *customer_ids: Any) -> int:
        with self.repository.connect() as conn:
            found = [c for c in customer_ids if self.writer._doc(conn, c) is not None]
            self.writer.delete(conn, found)
            if self.tell_deletes:
                self.repository.changed(*found, connection=conn)  # a watermark cannot see a deleted row
        return len(found)

    def unsubscribe(self, customer_id: Any) -> None:
        with self.repository.connect() as conn:
            self.writer.update(conn, customer_id, {"subscribed": False})


UNWATCHED = attrs.evolve(
    PEOPLE,
    updated_at=None,
    events={
        "visit": HostEvents(
            "visits", customer="pid", at="at", where={"note": None}, fields={"spent": JsonField("details", "spent")}
        ),
        "campaign.points": HostEvents("visits", customer="pid", at="at", where={"note": "points"}),
    },
)
"""PEOPLE without watermarks: only the triggers cohorts installs see the host's writes."""


class TextIds(LiveGroups):
    """LiveGroups whose customers have text ids, as the ``pid TEXT`` column of PostgreSQL holds them."""

    @stateful.rule(cid=st.sampled_from([str(i) for i in IDS]), city=st.sampled_from(CITIES), tags=st.sampled_from(TAGS))
    def upsert(self, cid: Any, city: str | None, tags: list[str]) -> None:
        super().upsert(cid, city, tags)


@pytest.mark.parametrize("seen_by", ["watermarks", "triggers"])
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_groups_follow_the_host_writes(
    backend: str, seen_by: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The live-groups state machine on a host's tables: the host writes them itself; no refresh anywhere.

    The host's writes are seen through ``updated_at`` watermarks (deletes told with ``changed``) or
    through the triggers cohorts installs (nothing told at all); on SQLite and on PostgreSQL, where
    each example gets a schema of its own.
    """
    engines: list[Any] = []
    schemas: list[str] = []

    def make() -> Any:
        if backend == "sqlite":
            engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
        else:
            url = request.getfixturevalue("postgres_url")
            schemas.append(f"host_sm_{os.getpid()}_{len(schemas)}")
            with sa.create_engine(url, poolclass=sa.pool.NullPool).begin() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA {schemas[-1]}")
            engine = sa.create_engine(url, connect_args={"options": f"-csearch_path={schemas[-1]}"})
        engines.append(engine)
        _people(engine)
        writer = DocWriter()
        repository = HostRepository(engine, PEOPLE if seen_by == "watermarks" else UNWATCHED, writer=writer)
        if seen_by == "triggers":
            repository.install_triggers()
        return HostApp(repository, writer, tell_deletes=seen_by == "watermarks")

    base = LiveGroups if backend == "sqlite" else TextIds
    machine = type("HostMachine", (base,), {"make": staticmethod(make), "tmp": tmp_path})
    try:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=20 if backend == "sqlite" else 8,
                stateful_step_count=12,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            ),
        )
    finally:
        for engine in engines:
            engine.dispose()
        if schemas:
            with sa.create_engine(request.getfixturevalue("postgres_url"), poolclass=sa.pool.NullPool).begin() as conn:
                for schema in schemas:
                    conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def people(request: pytest.FixtureRequest) -> Iterator[Any]:
    """An engine with the host's ``people`` and ``visits`` tables, on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    else:
        engine = request.getfixturevalue("postgres_engine")
    _people(engine)
    yield engine


def _host_write(engine: Any, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def test_watermarks_and_changed_are_seen_by_a_new_groups_object(people: Any) -> None:
    """The issue's cases on host tables: a new row, an edit, a new event, a delete; each seen at the next read."""
    repository = HostRepository(people, PEOPLE)
    doc = json.dumps({"city": "Laval"})
    _host_write(people, "INSERT INTO people VALUES ('a', :d, 1), ('b', :d, 1)", d=doc)
    Groups(repository).create("Laval", 'customer.city = "laval"')
    Groups(repository).create("Visited", "visit.count >= 1")
    assert set(Groups(repository).members("Laval", NOW)) == {"a", "b"}
    _host_write(people, "INSERT INTO people VALUES ('c', :d, 2)", d=doc)
    assert set(Groups(repository).members("Laval", NOW)) == {"a", "b", "c"}
    _host_write(people, "UPDATE people SET doc = :d, modified = 3 WHERE pid = 'a'", d=json.dumps({"city": "Lévis"}))
    assert set(Groups(repository).members("Laval", NOW)) == {"b", "c"}
    _host_write(people, "INSERT INTO visits (pid, at, modified) VALUES ('b', :at, 4)", at=NOW.isoformat())
    assert set(Groups(repository).members("Visited", NOW)) == {"b"}
    with people.begin() as conn:
        conn.execute(sa.text("DELETE FROM visits WHERE pid = 'b'"))
        conn.execute(sa.text("DELETE FROM people WHERE pid = 'b'"))
        repository.changed("b", connection=conn)
    assert set(Groups(repository).members("Laval", NOW)) == {"c"}
    assert Groups(repository).count("Visited", NOW) == 0
    causes = [(e.customer_id, e.joined, e.cause) for e in Groups(repository).history("Laval")]
    assert causes[-1] == ("b", False, "deleted")
    assert ("a", False, "data") in causes and ("c", True, "data") in causes


def test_select_count_and_limit(people: Any) -> None:
    rows = ", ".join(f"('p{i}', :d{i % 2}, 1)" for i in range(10))
    docs = {"d0": json.dumps({"city": "Laval"}), "d1": json.dumps({"city": "Québec"})}
    _host_write(people, f"INSERT INTO people VALUES {rows}", **docs)
    repository = HostRepository(people, PEOPLE)
    assert repository.count('customer.city = "laval"') == 5
    assert repository.select('customer.city = "laval"', limit=2) == {"p0", "p2"}
    assert repository.select('customer.city = "laval"', limit=0) == set()
    with pytest.raises(ValueError, match="limit"):
        repository.select('customer.city = "laval"', limit=-1)
    groups = Groups(repository)
    groups.create("Laval", 'customer.city = "laval"')
    groups.create("Picked")
    groups.add("Picked", "p1", "p2", now=NOW)
    rows = report(groups, now=NOW)
    assert [(row["group"], row["customers"]) for row in rows] == [("Laval", 5), ("Picked", 2)]


# -- writes stay the host's ---------------------------------------------------------------


def _campaign() -> Campaign:
    return Campaign(
        "Loyalty",
        group="Laval",
        start=NOW - dt.timedelta(days=1),
        end=NOW + dt.timedelta(days=1),
        actions=[Action("points", id="bonus", settings={"points": 10})],
    )


def test_a_writing_action_without_a_writer_is_refused_before_anything_runs(people: Any) -> None:
    _host_write(people, "INSERT INTO people VALUES ('a', :d, 1)", d=json.dumps({"city": "Laval", "points": 5}))
    repository = HostRepository(people, PEOPLE)
    groups = Groups(repository)
    groups.create("Laval", 'customer.city = "laval"')
    with pytest.raises(HostWriteError, match=r"campaign 'Loyalty' has a 'points' action.*no writer.*writer="):
        run_campaigns([_campaign()], repository, groups, standard_handlers(repository), NOW)
    assert repository.ledger().entries("Loyalty") == []
    with pytest.raises(HostWriteError, match="no writer"):
        repository.upsert([Customer("a", {"city": "Laval"})])
    with pytest.raises(HostWriteError, match="no writer"):
        repository.unsubscribe("a")
    assert repository.get("a") == Customer("a", {"city": "Laval", "points": 5})
    # a message-only campaign needs no writer
    seen: list[Any] = []
    message = Campaign("Hello", group="Laval", start=NOW - dt.timedelta(days=1), end=NOW + dt.timedelta(days=1),
                       actions=[Action("email", id="hi")])
    run_campaigns([message], repository, groups, {"email": lambda c, a, k: seen.append(c.id)}, NOW)
    assert seen == ["a"]


def test_import_without_a_writer_is_refused_and_writes_nothing(people: Any, tmp_path: Path) -> None:
    repository = HostRepository(people, PEOPLE)
    path = tmp_path / "people.csv"
    path.write_text("id,city\nz1,Laval\n", encoding="utf-8")
    with pytest.raises(HostWriteError, match=r"import_file writes customers.*no writer"):
        import_file(path, repository, group="Imported")
    assert len(repository) == 0
    assert Groups(repository).names() == []


def test_a_campaign_cycle_writes_through_the_host_writer(people: Any) -> None:
    """points through the writer: the host's row changes, the event is recorded, and the group follows."""
    _host_write(people, "INSERT INTO people VALUES ('a', :d, 1)", d=json.dumps({"city": "Laval", "points": 5}))
    writer = DocWriter()
    writer.tick = 100
    repository = HostRepository(people, PEOPLE, writer=writer)
    assert isinstance(writer, HostWriter)
    groups = Groups(repository)
    groups.create("Laval", 'customer.city = "laval"')
    groups.create("Rich", "customer.points >= 15")
    run = run_campaigns([_campaign()], repository, groups, standard_handlers(repository), NOW)
    assert run["Loyalty"].done == 1
    customer = repository.get("a")
    assert customer is not None and customer.attributes["points"] == 15
    assert [e.name for e in customer.events] == ["campaign.points"]
    assert writer.calls == ["update a ['points']", "event a campaign.points"]
    assert set(groups.members("Rich", NOW)) == {"a"}
    assert run_campaigns([_campaign()], repository, groups, standard_handlers(repository), NOW)["Loyalty"].done == 0
    assert audience(_campaign(), repository, groups, NOW).ids == {"a"}


def test_import_through_the_host_writer(people: Any, tmp_path: Path) -> None:
    writer = DocWriter()
    repository = HostRepository(people, PEOPLE, writer=writer)
    path = tmp_path / "people.csv"
    path.write_text("id,city\nz1,Laval\nz2,Québec\n", encoding="utf-8")
    result = import_file(path, repository, group="Imported", new_attributes=["city"], now=NOW)
    assert result.rejected == 0 and result.created == 2
    assert repository.ids() == {"z1", "z2"}
    assert set(Groups(repository).members("Imported", NOW)) == {"z1", "z2"}


# -- bindings and refusals --------------------------------------------------------------


def test_an_async_engine_is_refused_with_what_to_pass() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine("postgresql+psycopg://nobody@localhost/nothing")
    with pytest.raises(TypeError, match=r"sync_engine.*asyncio.to_thread"):
        HostRepository(engine, PEOPLE)  # type: ignore[arg-type]


def test_state_prefix_of_a_sql_repository_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    SQLRepository(url).close()
    engine = sa.create_engine(url)
    _people(engine)
    with pytest.raises(ValueError, match="state_prefix='cohorts_host_'"):
        HostRepository(engine, PEOPLE)
    own = HostRepository(engine, PEOPLE, state_prefix="cohorts_host_")
    own.changed("x")
    assert sa.inspect(engine).has_table("cohorts_host_changes")


def test_bad_bindings_name_what_is_wrong(people: Any) -> None:
    with pytest.raises(ValueError, match="the table nowhere does not exist"):
        HostRepository(people, HostTable("nowhere", id="id", columns={}))
    with pytest.raises(ValueError, match=r"updated_at column.*no column 'changed'"):
        HostRepository(people, HostTable("people", id="pid", columns={}, updated_at="changed"))
    with pytest.raises(TypeError, match="lacks insert, update, add_events, delete"):
        HostRepository(people, PEOPLE, writer=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="state_prefix"):
        HostRepository(people, PEOPLE, state_prefix="x; DROP")


def test_audiences_read_only_the_mapped_attributes(people: Any) -> None:
    """Without a mapped status, a status filter is that campaign's error; without subscribed, nobody is out."""
    _host_write(people, "INSERT INTO people VALUES ('a', :d, 1)", d=json.dumps({"city": "Laval"}))
    bare = HostTable("people", id="pid", columns={"city": JsonField("doc", "city")})
    repository = HostRepository(people, bare)
    groups = Groups(repository)
    groups.create("Laval", 'customer.city = "laval"')
    window = {"start": NOW - dt.timedelta(days=1), "end": NOW + dt.timedelta(days=1)}
    assert audience(Campaign("All", group="Laval", **window), repository, groups, NOW).unsubscribed == frozenset()
    active = Campaign("Active", group="Laval", status="active", actions=[Action("email", id="e")], **window)
    seen: list[Any] = []
    run = run_campaigns([active, Campaign("Hello", group="Laval", actions=[Action("email", id="e")], **window)],
                        repository, groups, {"email": lambda c, a, k: seen.append(c.id)}, NOW)
    assert run["Active"].error is not None and "maps no 'status' attribute" in run["Active"].error
    assert run["Hello"].done == 1 and seen == ["a"]
    # the same people, with subscribed mapped: the opt-out is honoured
    opted_out = json.dumps({"city": "Laval", "subscribed": False})
    _host_write(people, "UPDATE people SET doc = :d, modified = 2", d=opted_out)
    mapped = HostRepository(people, PEOPLE, state_prefix="cohorts_mapped_")
    mapped_groups = Groups(mapped)
    mapped_groups.create("Laval", 'customer.city = "laval"')
    assert audience(Campaign("All", group="Laval", **window), mapped, mapped_groups, NOW).unsubscribed == {"a"}


def test_many_host_writes_are_caught_up_in_the_database(people: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hundreds of rows written by the host: the next read re-evaluates them in SQL, restricted to them."""
    repository = HostRepository(people, PEOPLE)
    cities = ["Laval", "Lévis", "Québec"]
    rows = ", ".join(f"('p{i}', :d{i % 3}, 1)" for i in range(700))
    docs = {f"d{k}": json.dumps({"city": city}) for k, city in enumerate(cities)}
    _host_write(people, f"INSERT INTO people VALUES {rows}", **docs)
    groups = Groups(repository)
    groups.create("Laval", 'customer.city = "laval"')
    groups.create("Visited lately", "visit.last_time within last 3 days")
    groups.create("Lapsed Laval", 'customer in group "Laval" and customer not in group "Visited lately"')
    assert groups.count("Laval", NOW) == 234
    store = groups._store
    scopes: list[int] = []
    start = store.start_pass  # type: ignore[attr-defined]

    def spy(scope: Any = None) -> None:
        scopes.append(-1 if scope is None else len(scope))
        start(scope)

    monkeypatch.setattr(store, "start_pass", spy)
    moved = ", ".join(f"'p{i}'" for i in range(0, 700, 7))
    _host_write(people, f"UPDATE people SET doc = :d, modified = 2 WHERE pid IN ({moved})", d=docs["d0"])
    visits = ", ".join(f"('p{i}', :at, 2)" for i in range(0, 700, 2))
    yesterday = (NOW - dt.timedelta(days=1)).isoformat()
    _host_write(people, f"INSERT INTO visits (pid, at, modified) VALUES {visits}", at=yesterday)
    reference = MemoryRepository(list(repository))
    for name, rule in [("Laval", 'customer.city = "laval"'), ("Visited lately", "visit.last_time within last 3 days")]:
        assert set(groups.members(name, NOW)) == reference.select(rule, NOW), name
    assert len(scopes) == 1 and scopes[0] >= 400  # 400 written (watermarks may name more): one pass, in SQL
    laval, lately = reference.select('customer.city = "laval"', NOW), reference.select(
        "visit.last_time within last 3 days", NOW
    )
    assert set(groups.members("Lapsed Laval", NOW)) == laval - lately
    later = NOW + dt.timedelta(days=3)
    assert set(groups.members("Visited lately", later)) == reference.select("visit.last_time within last 3 days", later)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_catch_up_of_many_customers_with_integer_ids(backend: str, request: pytest.FixtureRequest) -> None:
    """From 500 changed customers a catch-up is computed in the database over a table of their ids (as
    text): the host's BIGINT id is compared with them as its own type (PostgreSQL has no bigint = text)."""
    if backend == "sqlite":
        engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    else:
        engine = request.getfixturevalue("postgres_engine")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE clients (no BIGINT PRIMARY KEY, city TEXT, modified BIGINT NOT NULL)")
        conn.exec_driver_sql(
            "INSERT INTO clients (no, city, modified) VALUES " + ", ".join(f"({i}, 'Laval', 0)" for i in range(1, 701))
        )
    table = HostTable("clients", id="no", columns={"city": "city"}, updated_at="modified")
    groups = Groups(HostRepository(engine, table))
    groups.create("Lévis", rule='customer.city = "Lévis"')
    assert groups.count("Lévis", now=NOW) == 0
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE clients SET city = 'Lévis', modified = 1 WHERE no <= 600")
    assert set(groups.members("Lévis", now=NOW)) == set(range(1, 601))
