"""Phone conditions on host tables (issue #13): PostgreSQL reads the E.164 numbers a HostRepository keeps.

The in-memory evaluator over the same customers is the reference, on SQLite (which parses phone
numbers in SQL) and PostgreSQL (which reads the repository's phone table, kept up to date with the
host's writes: watermarks, ``changed`` and triggers).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohorts import Groups, HostRepository, HostTable, JsonField, MemoryRepository, RuleError, where

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
TICKS = itertools.count(100)  # watermarks only move forward, across examples too
DDL = {
    "sqlite": "CREATE TABLE clients (no INTEGER PRIMARY KEY, tel TEXT, doc TEXT, modified INTEGER NOT NULL)",
    "postgresql": "CREATE TABLE clients (no INTEGER PRIMARY KEY, tel TEXT, doc JSONB, modified BIGINT NOT NULL)",
}
CLIENTS = HostTable(
    "clients",
    id="no",
    columns={"phone": "tel", "mobile_phone": JsonField("doc", "mobile"), "city": JsonField("doc", "city")},
    updated_at="modified",
)
PHONES = [
    "514-555-0199",
    "+1 (514) 555 0199",
    "(514) 555.0199",
    "15145550199",
    "418 555 0000",
    "+33 1 23 45 67 89",
    "call me",
    "",
    "   ",
    "0199",
    None,
]
RULES = [
    "customer.phone is unknown",
    "customer.phone is known",
    'customer.phone = "(514) 555-0199"',
    'customer.phone != "514 555 0199"',
    'customer.phone starts with "+1514"',
    'customer.phone ends with "0199"',
    'customer.phone contains "555"',
    'customer.phone in ["514-555-0199", "+33123456789"]',
    'customer.mobile_phone = "418-555-0000"',
    "customer.mobile_phone is unknown",
    'NOT (customer.phone = "5145550199" OR customer.mobile_phone starts with "+33")',
    'customer.phone = "5145550199" AND customer.city = "Laval"',
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "sqlite":
        engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    else:
        engine = request.getfixturevalue("postgres_engine")
    with engine.begin() as conn:
        conn.exec_driver_sql(DDL[engine.dialect.name])
    yield engine


def _write(engine: Any, rows: list[tuple[int, str | None, str | None]], tick: int) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM clients"))
        for no, tel, mobile in rows:
            doc = json.dumps({"mobile": mobile, "city": "Laval" if no % 2 else "Lévis"})
            conn.execute(
                sa.text("INSERT INTO clients VALUES (:no, :tel, :doc, :tick)"),
                {"no": no, "tel": tel, "doc": doc, "tick": tick},
            )


def _reference(repository: HostRepository, rule: str) -> set[Any]:
    return MemoryRepository(list(repository)).select(rule, NOW)


@given(data=st.data())
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_phone_conditions_agree_with_the_evaluator(engine: Any, data: st.DataObject) -> None:
    """Every phone rule selects on the host's tables what the evaluator selects, as the data changes."""
    repository = HostRepository(engine, CLIENTS, state_prefix="cohorts_ph_")
    for step in (1, 2):  # the second round changes every number: the phone table must follow
        phones = st.sampled_from(PHONES)
        rows = data.draw(st.lists(st.tuples(phones, phones), max_size=8), label=f"rows {step}")
        _write(engine, [(no, tel, mobile) for no, (tel, mobile) in enumerate(rows, 1)], next(TICKS))
        for rule in RULES:
            assert repository.select(rule, NOW) == _reference(repository, rule), rule
            assert repository.count(rule, NOW) == len(_reference(repository, rule)), rule


def test_the_issue_case_is_unknown_works(engine: Any) -> None:
    _write(engine, [(1, "514-555-0199", None), (2, "nope", "418 555 0000"), (3, None, None)], 1)
    repository = HostRepository(engine, CLIENTS)
    assert repository.select("customer.phone is unknown", NOW) == {2, 3}
    assert repository.select('customer.phone = "+1 514 555 0199"', NOW) == {1}


def test_groups_follow_phone_edits(engine: Any) -> None:
    """Watermarked edits, deletes reported with ``changed`` and triggers all reach the phone table."""
    _write(engine, [(1, "514-555-0199", None), (2, "418-555-0000", None)], 1)
    repository = HostRepository(engine, CLIENTS)
    groups = Groups(repository)
    groups.create("Montreal numbers", 'customer.phone starts with "+1514"')
    assert set(groups.members("Montreal numbers", NOW)) == {1}
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE clients SET tel = '(514) 555-1111', modified = 2 WHERE no = 2"))
    assert set(Groups(repository).members("Montreal numbers", NOW)) == {1, 2}
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM clients WHERE no = 1"))
        repository.changed(1, connection=conn)
    assert set(Groups(repository).members("Montreal numbers", NOW)) == {2}
    assert repository.select('customer.phone starts with "+1514"', NOW) == {2}
    repository.install_triggers()
    with engine.begin() as conn:  # no watermark moved: the triggers log it
        conn.execute(sa.text("UPDATE clients SET tel = 'unknown' WHERE no = 2"))
    assert repository.select('customer.phone starts with "+1514"', NOW) == set()
    assert set(Groups(repository).members("Montreal numbers", NOW)) == set()


def test_a_new_phone_attribute_refills_the_table(engine: Any) -> None:
    from cohorts import AttributeType, Schema

    _write(engine, [(1, "514-555-0199", "418 555 0000")], 1)
    repository = HostRepository(engine, CLIENTS)
    assert repository.select('customer.phone = "5145550199"', NOW) == {1}
    schema = Schema({"customer": {"phone": AttributeType.PHONE, "mobile_phone": AttributeType.TEXT,
                                  "city": AttributeType.TEXT}})
    repository.declare(schema)
    assert repository.select('customer.mobile_phone = "418 555 0000"', NOW) == {1}  # text now
    repository.declare(Schema({"customer": {"phone": AttributeType.PHONE, "mobile_phone": AttributeType.PHONE,
                                            "city": AttributeType.TEXT}}))
    assert repository.select('customer.mobile_phone = "4185550000"', NOW) == {1}


@pytest.mark.postgres
def test_without_a_repository_postgresql_says_where_phones_are_read(postgres_engine: Any) -> None:
    with postgres_engine.begin() as conn:
        conn.exec_driver_sql(DDL["postgresql"])
    with pytest.raises(RuleError, match=r"HostRepository.*phone_table"):
        CLIENTS.select(postgres_engine, "customer.phone is unknown", NOW)
    with pytest.raises(RuleError, match="HostRepository"):
        where("customer.phone is unknown", CLIENTS, NOW).compile(dialect=postgres_engine.dialect)
    repository = HostRepository(postgres_engine, CLIENTS)
    assert repository.phone_table == "cohorts_phones"
    repository.select("customer.phone is unknown", NOW)  # fills it
    assert CLIENTS.select(postgres_engine, "customer.phone is unknown", NOW, phone_table="cohorts_phones") == set()


def test_where_of_a_repository_reads_its_phone_table(engine: Any) -> None:
    """HostRepository.where / select_ids compose with the host's own query, phone conditions included,
    and see the host's writes made before they are built."""
    _write(engine, [(1, "514-555-0199", None), (2, "418-555-0000", "+33 1 23 45 67 89"), (3, None, None)], 1)
    repository = HostRepository(engine, CLIENTS, state_prefix="cohorts_w_")
    clients = sa.table("clients", sa.column("no"), sa.column("tel"))
    rule = 'customer.phone starts with "+1514" OR customer.mobile_phone starts with "+33"'

    def page(clause: Any) -> list[Any]:
        query = sa.select(clients.c.no).where(clause).order_by(clients.c.no.desc()).limit(10)
        with engine.connect() as conn:
            return list(conn.scalars(query))

    assert page(repository.where(rule, NOW)) == [2, 1]
    with engine.connect() as conn:
        assert set(conn.scalars(repository.select_ids("customer.phone is unknown", NOW))) == {3}
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE clients SET tel = '(514) 555-2222', modified = 2 WHERE no = 3"))
    assert page(repository.where(rule, NOW)) == [3, 2, 1]
    assert page(where(rule, CLIENTS, NOW, phone_table=repository.phone_table)) == [3, 2, 1]
    assert repository.select(rule, NOW) == {1, 2, 3}
