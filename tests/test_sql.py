"""The rule-to-SQL compiler: bound parameters only, runnable text, and index use."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cohorts import Customer, Event, RuleError
from cohorts.ast import Op
from cohorts.semantics import Spec, from_one, monotone, passes, plain_test
from cohorts.sql import SQLRepository, shadow_key, shadow_of, to_sql

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
ESCAPE_RULE = 'repair_order.closed.last_time < 730 days ago AND customer.vehicle_model contains "Escape"'
HOSTILE = "x'); DROP TABLE cohorts_customers; --"


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_values_are_bound_never_pasted(dialect: str) -> None:
    """Rule values, event names, attribute names and resolved times appear only among the parameters."""
    rule = f'customer.`{HOSTILE}` = "{HOSTILE}" AND `{HOSTILE}`.count > 2 AND appointment.at within last 3 days'
    sql, params = to_sql(rule, dialect, now=NOW)
    values = list(params.values()) if isinstance(params, dict) else params
    assert HOSTILE not in sql and "drop" not in sql.lower()
    assert HOSTILE in values  # the event name
    assert any(HOSTILE.casefold() in str(v) for v in values)  # the folded value (in a JSON document on PostgreSQL)
    assert not re.search(r"'[^']*'", sql), "no string literal in the SQL text"
    assert int((NOW - dt.timedelta(days=3) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds()) * 10**6 in values


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
@pytest.mark.parametrize(
    ("rule", "form"),
    [
        ("repair_order.closed.last_time < 730 days ago", "EXISTS"),
        ("repair_order.closed.last_time > 730 days ago", "GROUP BY"),
        ("NOT repair_order.closed.last_time < 730 days ago", "GROUP BY"),
        ("repair_order.closed.first_time > 30 days ago", "EXISTS"),
        ("repair_order.closed.first_time < 30 days ago", "GROUP BY"),
        ("repair_order.closed.last_time within last 90 days", "GROUP BY"),
        ("appointment.count >= 1", "EXISTS"),
        ("appointment.count > 0", "EXISTS"),
        ("appointment.count(last 30 days) >= 1", "EXISTS"),
        ("appointment.count = 0", "NOT EXISTS"),
        ("appointment.count < 1", "NOT EXISTS"),
        ("NOT appointment.count >= 1", "NOT EXISTS"),
        ("appointment.count >= 2", "GROUP BY"),
        ("appointment.count between 1 and 3", "GROUP BY"),
    ],
)
def test_aggregates_read_as_some_event_where_that_is_the_same(rule: str, form: str, dialect: str) -> None:
    """``last_time`` over a lower bound, ``first_time`` under an upper one and ``count >= 1`` need no GROUP BY."""
    sql, _ = to_sql(rule, dialect, now=NOW)
    if form == "GROUP BY":
        assert "GROUP BY" in sql
    else:
        assert "GROUP BY" not in sql and "HAVING" not in sql
        assert ("NOT EXISTS" in sql or "NOT IN" in sql) == (form == "NOT EXISTS")


_NUMBER_OPS = [Op.EQ, Op.LT, Op.LE, Op.GT, Op.GE]
_specs = st.one_of(
    st.builds(plain_test, st.sampled_from(_NUMBER_OPS), st.integers(-3, 5)),
    st.builds(lambda a, b: plain_test(Op.BETWEEN, (a, b)), st.integers(-3, 5), st.integers(-3, 5)),
    st.builds(lambda v: plain_test(Op.IN, v), st.lists(st.integers(-3, 5), max_size=4)),
)


@given(
    st.lists(_specs, min_size=1, max_size=3).map(lambda specs: tuple(c for spec in specs for c in spec)),
    st.lists(st.integers(-5, 8), min_size=1, max_size=6),
)
def test_some_event_readings_agree_with_the_aggregates(spec: Spec, times: list[int]) -> None:
    """What lets the compiler drop the aggregate: ``from_one`` and ``monotone`` agree with ``passes``."""
    some = from_one(spec)
    if some is not None:
        assert all(passes(spec, n) == some for n in range(1, 12))
    direction = monotone(spec)
    if direction is not None:
        extreme = max(times) if direction == "up" else min(times)
        assert passes(spec, extreme) == any(passes(spec, t) for t in times)


def test_placeholders_match_parameters() -> None:
    """PostgreSQL gets a dict for %(name)s placeholders; SQLite a list in ``?`` order."""
    sql, params = to_sql(ESCAPE_RULE, now=NOW)
    assert isinstance(params, dict)
    assert set(re.findall(r"%\((\w+)\)s", sql)) == set(params)
    assert "GROUP BY" not in sql and "max(" not in sql  # a lower bound on last_time: some event passes it
    lite, values = to_sql(ESCAPE_RULE, "sqlite", now=NOW)
    assert isinstance(values, list)
    assert lite.count("?") == len(values)


def test_to_sql_runs_in_a_plain_driver(tmp_path: Any) -> None:
    """The SQLite text and parameters run as they are in the sqlite3 module, on a repository's tables."""
    path = tmp_path / "plain.db"
    SQLRepository(path).upsert(
        [
            Customer("c1", {"vehicle_model": "Ford Escape"}, [Event("repair_order.closed", "2026-03-01T10:00")]),
            Customer("c2", {"vehicle_model": "Escape"}, [Event("repair_order.closed", "2020-03-01T10:00")]),
        ]
    )
    sql, params = to_sql(ESCAPE_RULE, "sqlite", now=NOW)
    with sqlite3.connect(path) as conn:
        rows = conn.execute(sql, params).fetchall()
    assert rows == [("c1", 0)]


def test_bad_dialect_and_groups() -> None:
    """An unknown dialect is a ValueError; a group condition needs groups=."""
    with pytest.raises(ValueError, match="dialect"):
        to_sql('customer.city = "x"', "mysql")
    with pytest.raises(RuleError, match="groups="):
        to_sql('customer in group "VIP"')
    sql, params = to_sql('customer in group "VIP"', groups={"VIP": {1, "a"}}.__getitem__)
    assert "ANY" in sql and ["1"] in params.values()  # type: ignore[union-attr]


def test_shadow_readings() -> None:
    """Shadows hold the values.py readings: folded text, numbers, booleans, µs times with parts, phones, lists."""
    shadow = shadow_of(
        {
            "city": " MONTRÉAL ",
            "n": "2.5",
            "ok": "oui",
            "at": "2026-11-22T10:00:00",
            "phone": "(514) 555-0199",
            "tags": ["A", 3, "", True],
            "blank": " ",
            "Policy #": "x",
        },
        dt.timezone(dt.timedelta(hours=-5)),
        "CA",
        phones={"phone"},
    )
    assert shadow["city"] == {"t": "montréal"}
    assert shadow["n"] == {"t": "2.5", "n": 2.5}
    assert shadow["ok"] == {"t": "oui", "b": True}
    assert shadow["at"]["m"] == 1795359600000000 and (shadow["at"]["y"], shadow["at"]["w"]) == (2026, 7)
    assert shadow["phone"]["p"] == "+15145550199"
    assert shadow["tags"] == {"lt": ["a", "3"], "ln": [3], "lb": [True]}
    assert "blank" not in shadow
    assert shadow[shadow_key("Policy #")] == {"t": "x"}


def test_sqlite_explain_uses_the_events_index() -> None:
    """A selective event rule is answered through the (name, customer_pk, at) index on SQLite."""
    repository = SQLRepository("sqlite://")
    repository.upsert([Customer(i, {}, [Event("appointment", "2026-01-01")]) for i in range(50)])
    plan = repository.explain("repair_order.closed.last_time < 730 days ago", NOW)
    assert "cohorts_events_name" in plan


@pytest.mark.postgres
def test_postgres_explain_uses_indexes(postgres_engine: Any) -> None:
    """On PostgreSQL, an equality on an attribute uses the GIN index of the shadow, and events their index."""
    repository = SQLRepository(postgres_engine)
    repository.upsert(
        Customer(
            i, {"city": f"City {i % 500}"}, [Event("appointment", dt.datetime(2026, 1, 1) + dt.timedelta(hours=i))]
        )
        for i in range(3000)
    )
    assert repository.select('customer.city = "city 7"', NOW) == set(range(7, 3000, 500))
    # A table this small is cheaper to scan; forbid that to see which index the query can use
    # (benchmarks/bench_sql.py shows the planner picking them by itself at 1,000,000 customers).
    with repository.transaction(), repository.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = repository.explain('customer.city = "City 7"', NOW)
        assert "cohorts_customers_shadow" in plan, plan
        plan = repository.explain("appointment.at within last 2 days", dt.datetime(2026, 1, 3, tzinfo=dt.UTC))
    assert "cohorts_events_name_at" in plan, plan


@pytest.mark.postgres
def test_postgres_text_order_is_by_code_point(postgres_url: str) -> None:
    """In a database whose default collation is linguistic (ICU en-US), text still orders by code point."""
    import sqlalchemy as sa

    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql("DROP DATABASE IF EXISTS cohorts_icu")
        conn.exec_driver_sql(
            "CREATE DATABASE cohorts_icu TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.utf8'"
        )
    engine = sa.create_engine(postgres_url.rsplit("/", 1)[0] + "/cohorts_icu")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 'école' > 'zz'").scalar() is False  # linguistic order
        repository = SQLRepository(engine)
        repository.upsert(
            [Customer(1, {"city": "Zurich"}), Customer(2, {"city": "école"}), Customer(3, {"city": "Apple"})]
        )
        assert repository.select('customer.city > "zz"', NOW) == {2}
        assert repository.select('customer.city between "a" and "zz"', NOW) == {1, 3}
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql("DROP DATABASE cohorts_icu")
        admin.dispose()


HOST_RULES = [
    'customer.city = "laval"',
    'customer.city != "LÉVIS"',
    'customer.city in ["québec", "laval"]',
    'customer.city > "m" and customer.city <= "zz"',
    'customer.vehicle_model contains "escape"',
    'customer.vehicle_model starts with "FORD"',
    'customer.vehicle_model ends with "v"',
    "customer.vehicle_year between 2015 and 2020",
    "customer.vehicle_year >= 2019 or customer.subscribed = false",
    "NOT customer.subscribed = true",
    "customer.created_at within last 30 days",
    "customer.created_at before 2026-01-01",
    "customer.created_at = today",
    "customer.created_at.year = 2025",
    "customer.created_at.weekday in [saturday, sunday]",
    "customer.score > 2",
    "customer.score is unknown",
    "customer.city is known and customer.vehicle_model is unknown",
    'customer in group "VIP"',
]
HOST_ROWS = [
    (1, "LAVAL", "Ford Escape", 2019, True, dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC), 2.5),
    (2, " Lévis ", "Ford Escape Hybrid", 2015, False, dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC), None),
    (3, "Québec", None, 2021, None, dt.datetime(2026, 11, 22, 1, tzinfo=dt.UTC), 3.0),
    (4, "", "Honda CR-V", None, True, None, 1.0),
    (5, None, "Toyota RAV4", 2012, False, dt.datetime(2025, 12, 31, 23, 59, tzinfo=dt.UTC), 7.0),
    (6, "montréal", "Tesla Model 3", 2020, True, dt.datetime(2024, 2, 29, tzinfo=dt.UTC), None),
]
HOST_COLUMNS = {
    "city": "town",
    "vehicle_model": "car",
    "vehicle_year": "model_year",
    "subscribed": "opt_in",
    "created_at": "since",
    "score": "score",
}


def _host_reference(rows: list[tuple[Any, ...]]) -> Any:
    from cohorts.repository import MemoryRepository

    names = list(HOST_COLUMNS)
    return MemoryRepository(Customer(row[0], dict(zip(names, row[1:], strict=True))) for row in rows)


def test_host_table_on_sqlite() -> None:
    """Rules run on a host's own SQLite table through a declarative mapping, with the reference's answers."""
    import sqlalchemy as sa

    from cohorts.sql import HostTable

    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE crm_clients (client_no INTEGER PRIMARY KEY, town TEXT, car TEXT, model_year INTEGER,"
            " opt_in INTEGER, since TEXT, score REAL)"
        )
        conn.exec_driver_sql(
            "INSERT INTO crm_clients VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(*row[:5], row[5].isoformat() if row[5] else None, row[6]) for row in HOST_ROWS],
        )
        rows = [tuple(r) for r in conn.exec_driver_sql("SELECT * FROM crm_clients").all()]
    host = HostTable("crm_clients", id="client_no", columns=HOST_COLUMNS)
    reference = _host_reference(rows)
    groups = {"VIP": {1, 4, 99}}.__getitem__
    for rule in HOST_RULES:
        assert host.select(engine, rule, NOW, groups=groups) == reference.select(rule, NOW, groups=groups), rule
    with pytest.raises(RuleError, match="maps no events"):
        host.select(engine, "appointment.count > 1", NOW)
    with pytest.raises(RuleError, match="not mapped"):
        host.select(engine, 'customer.email = "x"', NOW)
    with pytest.raises(ValueError, match="plain SQL name"):
        HostTable("clients; drop table x", id="id", columns={})


@pytest.mark.postgres
def test_host_table_on_postgres(postgres_engine: Any) -> None:
    """The same mapping works on a typed PostgreSQL table (text, integer, boolean, timestamptz, numeric)."""
    from cohorts.sql import HostTable

    with postgres_engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE crm_clients (client_no INTEGER PRIMARY KEY, town TEXT, car TEXT, model_year INTEGER,"
            " opt_in BOOLEAN, since TIMESTAMPTZ, score NUMERIC)"
        )
        conn.exec_driver_sql(
            "INSERT INTO crm_clients VALUES (%(a)s, %(b)s, %(c)s, %(d)s, %(e)s, %(f)s, %(g)s)",
            [dict(zip("abcdefg", row, strict=True)) for row in HOST_ROWS],
        )
    host = HostTable("crm_clients", id="client_no", columns=HOST_COLUMNS)
    reference = _host_reference(HOST_ROWS)
    groups = {"VIP": {1, 4, 99}}.__getitem__
    for rule in HOST_RULES:
        assert host.select(postgres_engine, rule, NOW, groups=groups) == reference.select(rule, NOW, groups=groups), (
            rule
        )


def test_close_releases_connections_and_the_repository_still_works(tmp_path: Any) -> None:
    """close() (or a with block) disposes of the engine it made; an engine passed in is left to its host."""
    import sqlalchemy as sa

    path = tmp_path / "c.db"
    with SQLRepository(path) as repo:
        repo.upsert([Customer(1, {"city": "Laval"})])
    assert repo.engine.pool.checkedin() == 0
    assert repo.select('customer.city = "laval"') == {1}  # new connections on demand
    repo.close()
    engine = sa.create_engine(f"sqlite:///{path}")
    hosted = SQLRepository(engine)
    assert hosted.select('customer.city = "laval"') == {1}
    hosted.close()
    assert engine.pool.checkedin() == 1  # the host's pool is untouched
    engine.dispose()


@pytest.mark.parametrize(
    "rule",
    [
        'customer.city = "Laval"',
        'customer.tags contains "vip" AND NOT customer.city in ["Laval", "Lévis"]',
        "repair_order.closed.last_time < 730 days ago OR appointment.count(last 90 days) >= 3",
        "customer.phone is known AND customer.vehicle_year between 2015 and 2020",
    ],
)
def test_to_sql_parameters_are_exactly_those_the_text_uses(rule: str) -> None:
    """to_sql returns the parameters its SQL references, no more (users run it in their own warehouse)."""
    text, params = to_sql(rule, dialect="postgresql")
    assert isinstance(params, dict)
    assert set(re.findall(r"%\((p\d+)\)s", text)) == set(params)
    text, ordered = to_sql(rule, dialect="sqlite")
    assert text.count("?") == len(ordered)


# -- many values bound as one parameter --------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_among_binds_any_number_of_values_as_one_parameter(backend: str, request: pytest.FixtureRequest) -> None:
    """``Dialect.among``: the rows whose key is among 20,000 text or integer values, typed columns or not."""
    import sqlalchemy as sa

    from cohorts.sql.dialects import dialect

    engine = sa.create_engine("sqlite://") if backend == "sqlite" else request.getfixturevalue("postgres_engine")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k TEXT, n BIGINT)")
        conn.execute(sa.text("INSERT INTO t VALUES (:k, :n)"), [{"k": f"s:{i}", "n": i} for i in range(0, 300, 3)])
        typed = sa.Table("t", sa.MetaData(), sa.Column("k", sa.Text), sa.Column("n", sa.BigInteger))
        light = sa.table("t", sa.column("k"), sa.column("n"))  # no types: the values give the array's
        among = dialect(conn).among
        for table in (typed, light):
            texts = [f"s:{i}" for i in range(20_000)]
            query = sa.select(table.c.n).where(among(table.c.k, texts))
            assert sorted(conn.execute(query).scalars()) == list(range(0, 300, 3))
            query = sa.select(table.c.k).where(among(table.c.n, list(range(0, 20_000, 2))))
            assert len(conn.execute(query).all()) == len(range(0, 300, 6))
            assert conn.execute(sa.select(table.c.k).where(among(table.c.k, []))).all() == []
