"""Triggers on the host's tables feed the change log (PostgreSQL and SQLite): groups follow every host write,
deletes (and TRUNCATE on PostgreSQL) included, with no watermark and no ``changed`` call.

Every write here is plain SQL on the host's tables, outside cohorts; every read is a new
:class:`cohorts.Groups`, which catches up through the change log only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from cohorts import Groups, HostEvents, HostRepository, HostTable
from cohorts.sql.host import _trigger_name

from .strategies import NOW

sa = pytest.importorskip("sqlalchemy")

DDL = [
    "CREATE TABLE clients (client_no INTEGER PRIMARY KEY, town TEXT)",
    "CREATE TABLE orders (id SERIAL PRIMARY KEY, client_no INTEGER, at TIMESTAMPTZ NOT NULL)",
    "CREATE TABLE people (pid TEXT PRIMARY KEY, town TEXT)",
    "CREATE TABLE visits (id SERIAL PRIMARY KEY, pid TEXT, at TIMESTAMPTZ NOT NULL)",
]
CLIENTS = HostTable(
    "clients",
    id="client_no",
    columns={"city": "town"},
    events={"order": HostEvents("orders", customer="client_no", at="at")},
)
PEOPLE = HostTable(
    "people", id="pid", columns={"city": "town"}, events={"visit": HostEvents("visits", customer="pid", at="at")}
)
TWO_CLIENTS = "INSERT INTO clients VALUES (1, 'Laval'), (2, 'Laval')"
AT = (NOW - dt.timedelta(days=1)).isoformat()


SQLITE_DDL = [statement.replace("SERIAL", "INTEGER") for statement in DDL]


@pytest.fixture
def host(postgres_engine: Any) -> Any:
    """The host's tables on PostgreSQL."""
    with postgres_engine.begin() as conn:
        for statement in DDL:
            conn.exec_driver_sql(statement)
    return postgres_engine


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_host(request: pytest.FixtureRequest) -> Any:
    """The host's tables on SQLite or PostgreSQL."""
    if request.param == "postgresql":
        return request.getfixturevalue("host")
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    with engine.begin() as conn:
        for statement in SQLITE_DDL:
            conn.exec_driver_sql(statement)
    return engine


def _triggers(engine: Any) -> list[tuple[str, int]]:
    """How many of cohorts' triggers each host table has."""
    if engine.dialect.name == "sqlite":
        query = (
            "SELECT tbl_name, count(*) FROM sqlite_master WHERE type = 'trigger'"
            " AND substr(name, 1, 11) = 'cohorts_log' GROUP BY 1 ORDER BY 1"
        )
    else:
        query = (
            "SELECT tgrelid::regclass::text, count(*) FROM pg_trigger WHERE starts_with(tgname, 'cohorts_log')"
            " AND tgrelid::regclass::text IN ('clients', 'orders', 'people', 'visits') GROUP BY 1 ORDER BY 1"
        )
    with engine.connect() as conn:
        return [(str(name), int(count)) for name, count in conn.exec_driver_sql(query)]


def _write(engine: Any, *statements: str) -> None:
    """The host's own write, in one transaction, not through cohorts."""
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement), {"at": AT})


def _members(repository: HostRepository, group: str) -> set[Any]:
    return set(Groups(repository).members(group, NOW))


def _repository(engine: Any, table: HostTable = CLIENTS) -> HostRepository:
    repository = HostRepository(engine, table)
    repository.install_triggers()
    groups = Groups(repository)
    groups.create("Laval", 'customer.city = "laval"')
    groups.create("Buyers", "order.count >= 1" if table is CLIENTS else "visit.count >= 1")
    return repository


def _log(engine: Any) -> list[str]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql("SELECT customer FROM cohorts_changes ORDER BY seq").scalars())


def test_groups_follow_every_host_write(any_host: Any) -> None:
    """Inserts, updates and deletes of customers, inserts and deletes of events: each seen at the next read."""
    _write(any_host, "INSERT INTO clients VALUES (1, 'Laval'), (2, 'Québec')")
    repository = _repository(any_host)
    assert _members(repository, "Laval") == {1}
    _write(any_host, "INSERT INTO clients VALUES (3, 'laval')")
    assert _members(repository, "Laval") == {1, 3}
    _write(any_host, "UPDATE clients SET town = 'Laval' WHERE client_no = 2")
    assert _members(repository, "Laval") == {1, 2, 3}
    _write(any_host, "UPDATE clients SET town = 'Lévis' WHERE client_no = 1")
    assert _members(repository, "Laval") == {2, 3}
    _write(any_host, "INSERT INTO orders (client_no, at) VALUES (2, :at), (3, :at), (NULL, :at)")
    assert _members(repository, "Buyers") == {2, 3}
    _write(any_host, "DELETE FROM orders WHERE client_no = 3")
    assert _members(repository, "Buyers") == {2}
    _write(any_host, "DELETE FROM orders WHERE client_no = 2", "DELETE FROM clients WHERE client_no = 2")
    assert _members(repository, "Laval") == {3}
    assert _members(repository, "Buyers") == set()
    history = Groups(repository).history("Laval")
    assert (history[-1].customer_id, history[-1].joined, history[-1].cause) == (2, False, "deleted")
    assert [(e.customer_id, e.joined) for e in Groups(repository).history("Buyers")][-1] == (2, False)


def test_the_log_holds_ids_as_encode_id_writes_them(any_host: Any) -> None:
    """Integer columns log ``i:``, text columns ``s:``; NULL customers are skipped; an unchanged id once."""
    HostRepository(any_host, CLIENTS).install_triggers()
    HostRepository(any_host, PEOPLE).install_triggers()
    _write(
        any_host,
        "INSERT INTO clients VALUES (7, 'Laval')",
        "INSERT INTO people VALUES ('7', 'Laval'), ('p-1', NULL)",
        "INSERT INTO visits (pid, at) VALUES (NULL, :at), ('p-1', :at)",
        "UPDATE clients SET town = 'Lévis'",
    )
    assert _log(any_host) == ["i:7", "s:7", "s:p-1", "s:p-1", "i:7"]


def test_text_ids_follow_too(any_host: Any) -> None:
    _write(any_host, "INSERT INTO people VALUES ('a', 'Laval'), ('b', 'Québec')")
    repository = _repository(any_host, PEOPLE)
    assert _members(repository, "Laval") == {"a"}
    _write(
        any_host, "UPDATE people SET town = 'Laval' WHERE pid = 'b'", "INSERT INTO visits (pid, at) VALUES ('b', :at)"
    )
    assert _members(repository, "Laval") == {"a", "b"}
    assert _members(repository, "Buyers") == {"b"}
    _write(any_host, "DELETE FROM people WHERE pid = 'a'")
    assert _members(repository, "Laval") == {"b"}
    assert Groups(repository).history("Laval")[-1].cause == "deleted"


def test_moving_an_event_to_another_customer_marks_both(any_host: Any) -> None:
    _write(any_host, TWO_CLIENTS, "INSERT INTO orders (client_no, at) VALUES (1, :at)")
    repository = _repository(any_host)
    assert _members(repository, "Buyers") == {1}
    _write(any_host, "UPDATE orders SET client_no = 2 WHERE client_no = 1")
    assert _members(repository, "Buyers") == {2}
    _write(any_host, "UPDATE orders SET client_no = NULL")
    assert _members(repository, "Buyers") == set()


def test_changing_a_customer_id_marks_both(any_host: Any) -> None:
    _write(any_host, "INSERT INTO clients VALUES (1, 'Laval')")
    repository = _repository(any_host)
    assert _members(repository, "Laval") == {1}
    _write(any_host, "UPDATE clients SET client_no = 5 WHERE client_no = 1")
    assert _members(repository, "Laval") == {5}
    changes = [(e.customer_id, e.joined, e.cause) for e in Groups(repository).history("Laval")]
    assert sorted(changes[-2:]) == [(1, False, "deleted"), (5, True, "data")]


@pytest.mark.postgres
def test_truncate_is_seen(host: Any) -> None:
    _write(host, TWO_CLIENTS, "INSERT INTO orders (client_no, at) VALUES (1, :at)")
    repository = _repository(host)
    assert _members(repository, "Buyers") == {1}
    _write(host, "TRUNCATE orders")
    assert _members(repository, "Buyers") == set()
    _write(host, "TRUNCATE orders, clients")
    assert _members(repository, "Laval") == set()


def test_emptying_a_table_is_seen(any_host: Any) -> None:
    """A DELETE without WHERE (SQLite may truncate such a table in one step, but not with triggers on it)."""
    _write(any_host, TWO_CLIENTS, "INSERT INTO orders (client_no, at) VALUES (1, :at), (2, :at)")
    repository = _repository(any_host)
    assert _members(repository, "Buyers") == {1, 2}
    _write(any_host, "DELETE FROM orders")
    assert _members(repository, "Buyers") == set()
    _write(any_host, "DELETE FROM clients")
    assert _members(repository, "Laval") == set()


def test_removed_triggers_see_nothing_until_changed(any_host: Any) -> None:
    _write(any_host, "INSERT INTO clients VALUES (1, 'Laval')")
    repository = _repository(any_host)
    _write(any_host, "INSERT INTO clients VALUES (2, 'Laval')")
    assert _members(repository, "Laval") == {1, 2}
    repository.remove_triggers()
    repository.remove_triggers()  # removing again is fine
    _write(any_host, "INSERT INTO clients VALUES (3, 'Laval')", "DELETE FROM clients WHERE client_no = 1")
    assert _members(repository, "Laval") == {1, 2}
    repository.changed(1, 3)
    assert _members(repository, "Laval") == {2, 3}
    assert _triggers(any_host) == []


def test_installing_twice_logs_each_write_once(any_host: Any) -> None:
    repository = _repository(any_host)
    repository.install_triggers()
    CLIENTS.install_triggers(any_host)
    per_table = 3 if any_host.dialect.name == "sqlite" else 2
    assert _triggers(any_host) == [("clients", per_table), ("orders", per_table)]
    before = len(_log(any_host))
    _write(any_host, "INSERT INTO clients VALUES (1, 'Laval')", "INSERT INTO orders (client_no, at) VALUES (1, :at)")
    assert _log(any_host)[before:] == ["i:1", "i:1"]
    assert _members(repository, "Buyers") == {1}


def test_install_creates_a_missing_change_log(any_host: Any) -> None:
    """HostTable.install_triggers on its own: the change log is created, with the same columns HostRepository uses."""
    CLIENTS.install_triggers(any_host, state_prefix="app_")
    _write(any_host, "INSERT INTO clients VALUES (4, 'Laval')")
    with any_host.connect() as conn:
        rows = conn.exec_driver_sql("SELECT customer FROM app_changes").scalars().all()
    assert rows == ["i:4"]
    repository = HostRepository(any_host, CLIENTS, state_prefix="app_")
    Groups(repository).create("Laval", 'customer.city = "laval"')
    _write(any_host, "INSERT INTO clients VALUES (5, 'Laval')")
    assert _members(repository, "Laval") == {4, 5}
    CLIENTS.remove_triggers(any_host, state_prefix="app_")


@pytest.mark.postgres
def test_triggers_log_into_their_own_schema_whatever_the_writer_search_path(host: Any, postgres_url: str) -> None:
    repository = _repository(host)
    with host.connect() as conn:
        own = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
    other = sa.create_engine(postgres_url)
    try:
        with other.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO {own}.clients VALUES (9, 'Laval'), (8, 'Laval')")
            conn.exec_driver_sql(f"INSERT INTO {own}.orders (client_no, at) VALUES (9, now())")
        assert _members(repository, "Laval") == {8, 9}
        assert _members(repository, "Buyers") == {9}
        with other.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {own}.orders")
    finally:
        other.dispose()
    assert _members(repository, "Buyers") == set()


@pytest.mark.postgres
def test_a_writer_without_rights_on_the_change_log_is_logged(host: Any) -> None:
    """The trigger functions run with their owner's rights: the host's role needs none on cohorts' tables."""
    repository = _repository(host)
    role = f"host_app_{id(repository)}"
    with host.begin() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
        conn.exec_driver_sql(f"CREATE ROLE {role}")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.exec_driver_sql(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON clients, orders TO {role}")
        conn.exec_driver_sql(f"GRANT USAGE ON SEQUENCE orders_id_seq TO {role}")
    try:
        with host.begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL ROLE {role}")
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"), conn.begin_nested():
                conn.exec_driver_sql("SELECT count(*) FROM cohorts_changes")
            conn.exec_driver_sql("INSERT INTO clients VALUES (1, 'Laval'), (2, 'Laval')")
            conn.exec_driver_sql("INSERT INTO orders (client_no, at) VALUES (1, now())")
            conn.exec_driver_sql("DELETE FROM clients WHERE client_no = 2")
        assert _members(repository, "Laval") == {1}
        assert _members(repository, "Buyers") == {1}
        with host.begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL ROLE {role}")
            conn.exec_driver_sql("TRUNCATE orders")
        assert _members(repository, "Buyers") == set()
    finally:
        with host.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")


def test_a_missing_table_is_named(any_host: Any) -> None:
    table = HostTable("clients", id="client_no", columns={}, events={"x": HostEvents("nowhere", "c", "at")})
    with pytest.raises(ValueError, match="the table nowhere does not exist"):
        table.install_triggers(any_host)
    assert _triggers(any_host) == []


@pytest.mark.postgres
def test_tables_in_another_schema(host: Any) -> None:
    """A schema-qualified HostTable: triggers go on its tables, the log stays in the state's schema."""
    crm = f"crm_{id(host)}"
    with host.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {crm}")
        conn.exec_driver_sql(f"CREATE TABLE {crm}.clients (client_no BIGINT PRIMARY KEY, town TEXT)")
        conn.exec_driver_sql(f"CREATE TABLE {crm}.orders (client_no BIGINT, at TIMESTAMPTZ NOT NULL)")
    try:
        table = HostTable(f"{crm}.clients", id="client_no", columns={"city": "town"},
                          events={"order": HostEvents(f"{crm}.orders", customer="client_no", at="at")})
        repository = HostRepository(host, table)
        repository.install_triggers()
        Groups(repository).create("Buyers", "order.count >= 1")
        _write(host, f"INSERT INTO {crm}.clients VALUES (1, 'Laval')", f"INSERT INTO {crm}.orders VALUES (1, :at)")
        assert _members(repository, "Buyers") == {1}
        _write(host, f"TRUNCATE {crm}.orders")
        assert _members(repository, "Buyers") == set()
        repository.remove_triggers()
    finally:
        with host.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {crm} CASCADE")


def test_on_sqlite_an_attached_database_is_refused_with_what_to_use(tmp_path: Any) -> None:
    """An SQLite trigger writes only tables of its own database: tables of an attached one are refused."""
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ATTACH DATABASE '{tmp_path / 'crm.db'}' AS crm")
        conn.exec_driver_sql("CREATE TABLE crm.clients (client_no INTEGER PRIMARY KEY, town TEXT)")
        conn.exec_driver_sql("CREATE TABLE clients (client_no INTEGER PRIMARY KEY, town TEXT)")
    attached = HostEvents("crm.clients", customer="client_no", at="town")
    table = HostTable("clients", id="client_no", columns={}, events={"x": attached})
    with pytest.raises(NotImplementedError, match=r"main database.*updated_at.*changed"):
        table.install_triggers(engine)
    assert _triggers(engine) == []
    with pytest.raises(ValueError, match="state_prefix"):
        HostTable("clients", id="client_no", columns={}).install_triggers(engine, state_prefix="x; DROP")


def test_trigger_names_fit_postgresql() -> None:
    long = _trigger_name("cohorts_" + "p" * 32, "schema_" + "s" * 20 + ".table_" + "t" * 30, "customer_number")
    assert len(long) + 2 <= 63
    assert long != _trigger_name("cohorts_" + "p" * 32, "schema_" + "s" * 20 + ".table_" + "t" * 30, "customer_numbe2")
    assert _trigger_name("cohorts_", "crm.clients", "client_no") == "cohorts_log_crm_clients_client_no"
