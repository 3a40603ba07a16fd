"""The Repository contract, checked on every backend through the ``repository`` fixture."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cohorts import Customer, Event, RuleError, Schema, default_schema
from cohorts.repository import CustomerDataError, MemoryRepository, Repository, UnknownCustomerError
from cohorts.sql import SCHEMA_VERSION, SQLRepository

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
ESCAPE_RULE = 'repair_order.closed.last_time < 730 days ago AND customer.vehicle_model contains "Escape"'


def _people() -> list[Customer]:
    return [
        Customer(
            "c1", {"vehicle_model": "Ford Escape", "city": "Laval"}, [Event("repair_order.closed", "2026-03-01T10:00")]
        ),
        Customer(
            "c2", {"vehicle_model": "ESCAPE", "city": "Lévis"}, [Event("repair_order.closed", "2023-03-01T10:00")]
        ),
        Customer(
            3, {"vehicle_model": "Civic", "tags": ["VIP", "Fleet"]}, [Event("appointment", dt.date(2026, 11, 20))]
        ),
        Customer("3", {"city": "LAVAL", "tags": "vip list"}),
    ]


def test_satisfies_the_protocol(repository: Any) -> None:
    """Every backend is a cohorts Repository with the default schema, UTC and the US region."""
    assert isinstance(repository, Repository)
    assert repository.schema == default_schema()
    assert repository.tz == dt.UTC
    assert repository.region == "US"


def test_upsert_get_and_select(repository: Any) -> None:
    """Stored customers read back equal, and the reference rule selects the recent Escape only."""
    repository.upsert(_people())
    assert len(repository) == 4
    assert repository.ids() == {"c1", "c2", 3, "3"}
    assert repository.get("c1") == _people()[0]
    assert repository.get("missing") is None
    assert repository.select(ESCAPE_RULE, NOW) == {"c1"}
    assert {c.id for c in repository} == {"c1", "c2", 3, "3"}


def test_count_and_limit(repository: Any) -> None:
    """count is the size of select; limit keeps the first matches in the order they were stored."""
    repository.upsert([Customer(i, {"city": "Laval" if i % 3 else "Lévis"}) for i in range(20, 0, -1)])
    laval = 'customer.city = "laval"'
    assert repository.count(laval, NOW) == len(repository.select(laval, NOW)) == 14
    assert repository.select(laval, NOW, limit=3) == {20, 19, 17}
    assert repository.select(laval, NOW, limit=0) == set()
    assert repository.select(laval, NOW, limit=100) == repository.select(laval, NOW)
    assert repository.count('customer.city = "nowhere"', NOW) == 0
    deep = " or ".join(f'(customer.city = "x{i}" and not customer.city = "y")' for i in range(40)) + f" or {laval}"
    assert repository.count(deep, NOW) == 14
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="limit"):
            repository.select(laval, NOW, limit=bad)


def test_ids_keep_their_type(repository: Any) -> None:
    """The integer 3 and the text "3" are two customers, and select returns each with its own type."""
    repository.upsert(_people())
    assert repository.select('customer.city = "laval"', NOW) == {"c1", "3"}
    assert repository.select('customer.vehicle_model = "civic"', NOW) == {3}
    assert repository.get(3) != repository.get("3")


def test_contains_on_lists_and_text(repository: Any) -> None:
    """contains on a list means an element equal to the value; on text it means a substring."""
    repository.upsert(_people())
    assert repository.select('customer.tags contains "vip"', NOW) == {3, "3"}
    assert repository.select('customer.tags contains "fle"', NOW) == set()
    assert repository.select('customer.tags does not contain "fleet"', NOW) == {"3"}


def test_upsert_replaces_attributes_and_keeps_events(repository: Any) -> None:
    """An upsert of a known customer replaces its attributes; its events stay and are not doubled."""
    repository.upsert(_people())
    stored = repository.get("c1")
    repository.upsert([stored.with_attributes(city="Québec")])
    again = repository.get("c1")
    assert again.attributes == {"vehicle_model": "Ford Escape", "city": "Québec"}
    assert again.events == stored.events
    repository.upsert([Customer("c1", {"city": "Gatineau"}, [Event("appointment", "2026-11-01T09:00")])])
    latest = repository.get("c1")
    assert latest.attributes == {"city": "Gatineau"}
    assert [e.name for e in latest.events] == ["repair_order.closed", "appointment"]
    assert repository.select('customer.city = "québec"', NOW) == set()
    assert repository.select('customer.city = "gatineau" and appointment.count = 1', NOW) == {"c1"}


def test_upsert_is_all_or_nothing(repository: Any) -> None:
    """A batch with one bad customer writes nothing, and the error names that customer."""
    repository.upsert(_people()[:1])
    batch = [Customer("ok", {"city": "Laval"}), Customer("bad", {"city": object()}), Customer("ok2")]
    with pytest.raises(CustomerDataError, match="'bad'") as caught:
        repository.upsert(batch)
    assert caught.value.customer_id == "bad"
    assert repository.ids() == {"c1"}
    with pytest.raises(CustomerDataError, match="id is text or an integer"):
        repository.upsert([Customer(True)])  # type: ignore[arg-type]


def test_add_events_and_unknown_customers(repository: Any) -> None:
    """add_events appends to a stored customer; an unknown id is an UnknownCustomerError."""
    repository.upsert(_people())
    repository.add_events(3, [Event("repair_order.closed", "2026-10-01T08:00", {"total": 120})])
    assert repository.select("repair_order.closed.total > 100", NOW) == {3}
    assert len(repository.get(3).events) == 2
    with pytest.raises(UnknownCustomerError, match="no customer with id 'nobody'"):
        repository.add_events("nobody", [Event("note", "2026-01-01")])
    with pytest.raises(UnknownCustomerError):
        repository.unsubscribe(404)


def test_delete(repository: Any) -> None:
    """delete removes customers with their events and counts only those that existed."""
    repository.upsert(_people())
    assert repository.delete("c1", "c1", "nobody", 3) == 2
    assert repository.ids() == {"c2", "3"}
    assert repository.select("repair_order.closed.count >= 1", NOW) == {"c2"}
    assert repository.select("appointment.count = 0", NOW) == {"c2", "3"}


def test_unsubscribe(repository: Any) -> None:
    """unsubscribe sets subscribed to false and keeps the other attributes."""
    repository.upsert(_people())
    repository.unsubscribe("c2")
    assert repository.select("customer.subscribed = false", NOW) == {"c2"}
    assert repository.get("c2").attributes["city"] == "Lévis"


def test_groups(repository: Any) -> None:
    """Group conditions read the lookup given to select; without one they are a RuleError."""
    repository.upsert(_people())
    groups = {"VIP": {3, "c2"}}.__getitem__
    assert repository.select('customer in group "VIP"', NOW, groups=groups) == {3, "c2"}
    assert repository.select('customer not in group "VIP" and customer.city = "laval"', NOW, groups=groups) == {
        "c1",
        "3",
    }
    with pytest.raises(RuleError, match="groups="):
        repository.select('customer in group "VIP"', NOW)


def test_invalid_rules(repository: Any) -> None:
    """Rules are checked as the evaluator checks them."""
    with pytest.raises(RuleError):
        repository.select("customer.vehicle_year contains 5", NOW)
    with pytest.raises(RuleError):
        repository.select("customer.city = ", NOW)


def test_transaction_rolls_back(repository: Any) -> None:
    """An exception in transaction() undoes every write of the block; a nested block undoes only its own."""
    repository.upsert(_people()[:1])
    with pytest.raises(RuntimeError), repository.transaction():
        repository.upsert([Customer("new")])
        repository.delete("c1")
        repository.add_events("new", [Event("note", "2026-01-01")])
        raise RuntimeError("crash")
    assert repository.ids() == {"c1"}
    with repository.transaction():
        repository.upsert([Customer("kept")])
        with pytest.raises(RuntimeError), repository.transaction():
            repository.upsert([Customer("undone")])
            raise RuntimeError("inner")
    assert repository.ids() == {"c1", "kept"}


def test_memory_extensions_roll_back() -> None:
    """An extension with snapshot()/restore() is rolled back with the customers."""

    class Counter:
        def __init__(self) -> None:
            self.value = 0

        def snapshot(self) -> int:
            return self.value

        def restore(self, snapshot: int) -> None:
            self.value = snapshot

    repository = MemoryRepository()
    counter = repository.extension("counter", Counter)
    counter.value = 1
    with pytest.raises(ValueError), repository.transaction():
        counter.value = 5
        raise ValueError("no")
    assert repository.extension("counter", Counter).value == 1


def _sqlite_and_postgres(request: pytest.FixtureRequest, backend: str) -> Any:
    if backend == "postgresql":
        return request.getfixturevalue("postgres_engine")
    return "sqlite://"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_other_stores_join_the_transaction(request: pytest.FixtureRequest, backend: str) -> None:
    """A table of another module, written through connect(), commits and rolls back with transaction()."""
    import sqlalchemy as sa

    repository = SQLRepository(_sqlite_and_postgres(request, backend))
    metadata = sa.MetaData()
    ledger = sa.Table("ledger", metadata, sa.Column("customer_id", sa.Text, primary_key=True))
    metadata.create_all(repository.engine)
    with pytest.raises(RuntimeError), repository.transaction():
        repository.upsert([Customer("a")])
        with repository.connect() as conn:
            conn.execute(sa.insert(ledger), [{"customer_id": "a"}])
        raise RuntimeError("crash between two writes")
    with repository.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ledger)).scalar() == 0
    assert len(repository) == 0
    with repository.transaction():
        repository.upsert([Customer("a")])
        with repository.connect() as conn:
            conn.execute(sa.insert(ledger), [{"customer_id": "a"}])
    with repository.connect() as conn:
        assert conn.execute(sa.select(ledger.c.customer_id)).scalars().all() == ["a"]


def test_sqlite_file_keeps_data_and_version(tmp_path: Path) -> None:
    """A plain file path is a SQLite database: data survives reopening, and the table version is recorded."""
    path = tmp_path / "customers.db"
    SQLRepository(str(path)).upsert(_people())
    reopened = SQLRepository(path)
    assert reopened.schema_version == SCHEMA_VERSION
    assert reopened.select(ESCAPE_RULE, NOW) == {"c1"}
    assert reopened.get(3) == _people()[2]


def test_changing_the_time_zone_rereads_values(tmp_path: Path) -> None:
    """Reopening with another time zone recomputes the stored readings (date parts, naive times)."""
    path = tmp_path / "tz.db"
    customer = Customer(1, {"created_at": dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.UTC)})
    SQLRepository(path).upsert([customer])
    assert SQLRepository(path).select("customer.created_at.year = 2026", NOW) == {1}
    assert SQLRepository(path, tz="America/Montreal").select("customer.created_at.year = 2025", NOW) == {1}


def test_new_phone_attribute_rereads_values(make_repository: Callable[..., Any]) -> None:
    """Declaring an attribute as a phone later makes phone conditions work on stored values."""
    repository = make_repository()
    repository.upsert([Customer(1, {"cell": "(514) 555-0199"}), Customer(2, {"cell": "n/a"})])
    repository.schema = repository.schema.add("customer", "cell", "phone")
    assert repository.select('customer.cell = "+1 514 555 0199"', NOW) == {1}
    assert repository.select('customer.cell starts with "+1514"', NOW) == {1}


def test_schema_must_be_a_schema(repository: Any) -> None:
    """Assigning something else than a Schema is a TypeError."""
    with pytest.raises(TypeError, match=r"cohorts\.Schema"):
        repository.schema = {"customer": {}}
    assert isinstance(repository.schema, Schema)


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    """A database made by cohorts 0.1 (no change log, JSON ids in the ledger) opens as version 2, data kept."""
    import sqlalchemy as sa

    path = tmp_path / "old.db"
    SQLRepository(path).upsert(_people())
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # what 0.1 left: version 1, no change log, a ledger keyed by JSON ids
        conn.exec_driver_sql("DROP TABLE cohorts_changes")
        conn.exec_driver_sql("UPDATE cohorts_meta SET value = '1' WHERE key = 'schema_version'")
        conn.exec_driver_sql(
            "CREATE TABLE cohorts_campaign_audience (campaign VARCHAR(200), customer VARCHAR(200),"
            " added_at VARCHAR(40), PRIMARY KEY (campaign, customer))"
        )
        conn.exec_driver_sql(
            "INSERT INTO cohorts_campaign_audience VALUES ('Spring', '3', 'x'), ('Spring', '\"c1\"', 'x')"
        )
    engine.dispose()
    reopened = SQLRepository(path)
    assert reopened.schema_version == SCHEMA_VERSION == 2
    assert reopened.select(ESCAPE_RULE, NOW) == {"c1"}
    assert reopened.ledger().enrolled("Spring") == {3, "c1"}  # re-encoded as i:3 and s:c1
    with reopened.connect() as conn:
        stored = sorted(conn.exec_driver_sql("SELECT customer FROM cohorts_campaign_audience").scalars())
    assert stored == ["i:3", "s:c1"]
    position = reopened.change_position()
    reopened.upsert([Customer("new")])
    assert reopened.changes_since(position)[0] == ["new"]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_sql_reads_customers_with_only_some_events(backend: str, request: pytest.FixtureRequest) -> None:
    """``get_many_reading``: the customers as ``get_many`` gives them, with only the events of the names asked."""
    from cohorts.repository import ReadsSomeEvents

    engine = "sqlite://" if backend == "sqlite" else request.getfixturevalue("postgres_engine")
    repository = SQLRepository(engine)
    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    repository.upsert(
        Customer(i, {"city": f"c{i}"}, [
            Event("visit", at), Event("invoice", at, {"total": i}), Event("visit", at, {"n": i})
        ])
        for i in range(1, 6001)
    )
    assert isinstance(repository, ReadsSomeEvents)
    ids = [*range(1, 6001, 7), 99_999]
    full = repository.get_many(ids)
    some = repository.get_many_reading(ids, ["visit"])
    none = repository.get_many_reading(ids, [])
    assert set(full) == set(some) == set(none) == set(range(1, 6001, 7))
    for cid, customer in full.items():
        assert some[cid].attributes == none[cid].attributes == customer.attributes
        assert list(some[cid].events) == [e for e in customer.events if e.name == "visit"]
        assert len(customer.events) == 3 and not none[cid].events
