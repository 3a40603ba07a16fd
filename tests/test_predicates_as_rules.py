"""A compiled ``Predicate`` is taken wherever a rule is, and ``str(predicate)`` is its rule text (issue #13)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import assume, given, settings

from cohorts import (
    Customer,
    Event,
    Groups,
    HostEvents,
    HostRepository,
    HostTable,
    MemoryRepository,
    RuleError,
    SQLRepository,
    compile,  # noqa: A004
    explain,
    matches,
    parse,
    select_ids,
    validate,
    where,
)
from cohorts.ast import Compiled

from .strategies import rules

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
RULE = 'customer.city = "Laval" AND visit.count >= 1'
CUSTOMERS = [
    Customer("a", {"city": "Laval"}, [Event("visit", NOW - dt.timedelta(days=3))]),
    Customer("b", {"city": "Laval"}),
    Customer("c", {"city": "Québec"}, [Event("visit", NOW - dt.timedelta(days=1))]),
]


@given(rules())
@settings(max_examples=60, deadline=None)
def test_the_text_of_a_predicate_reads_back_as_its_rule(rule: object) -> None:
    try:
        predicate = compile(rule)  # type: ignore[arg-type]
    except RuleError:
        assume(False)
        raise
    assert parse(str(predicate)) == predicate.rule
    assert str(predicate) == str(predicate.rule)
    assert isinstance(predicate, Compiled)


def test_the_text_of_a_predicate_is_canonical() -> None:
    assert str(compile('customer.city = "Laval"   and   visit.count>=1')) == RULE


@pytest.fixture(params=["memory", "sqlite"])
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> MemoryRepository | SQLRepository:
    repo: MemoryRepository | SQLRepository
    repo = MemoryRepository() if request.param == "memory" else SQLRepository(f"sqlite:///{tmp_path / 'c.db'}")
    repo.upsert(CUSTOMERS)
    return repo


def test_repositories_take_a_predicate(repository: MemoryRepository | SQLRepository) -> None:
    predicate = compile(RULE)
    assert repository.select(predicate, NOW) == repository.select(RULE, NOW) == {"a"}
    assert repository.count(predicate, NOW) == 1
    assert repository.select(predicate, NOW, limit=0) == set()


def test_groups_take_a_predicate_and_store_its_text(repository: MemoryRepository | SQLRepository) -> None:
    groups = Groups(repository)
    groups.create("Laval visitors", compile(RULE))
    assert set(groups.members("Laval visitors", NOW)) == {"a"}
    assert str(Groups(repository).definition("Laval visitors").rule) == RULE
    groups.set_rule("Laval visitors", compile('customer.city = "Québec"'))
    assert set(groups.members("Laval visitors", NOW)) == {"c"}
    preview = groups.preview("Laval visitors", compile('customer.city = "Laval"'), NOW)
    assert (preview.rule, preview.after) == ('customer.city = "Laval"', 2)


def test_the_evaluator_takes_a_predicate() -> None:
    predicate = compile(RULE)
    checked = compile('repair_order.closed.last_time < 730 days ago AND customer.vehicle_model contains "Escape"')
    assert validate(checked) == checked.rule
    assert compile(predicate).rule == predicate.rule
    assert matches(predicate, CUSTOMERS[0], NOW) and not matches(predicate, CUSTOMERS[1], NOW)
    assert explain(predicate, CUSTOMERS[0], NOW).result is True


def test_host_tables_take_a_predicate() -> None:
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE clients (no INTEGER PRIMARY KEY, town TEXT)")
        conn.exec_driver_sql("CREATE TABLE visits (no INTEGER, at TEXT)")
        conn.exec_driver_sql("INSERT INTO clients VALUES (1, 'Laval'), (2, 'Laval'), (3, 'Québec')")
        conn.exec_driver_sql(f"INSERT INTO visits VALUES (1, '{(NOW - dt.timedelta(days=2)).isoformat()}')")
    visits = HostEvents("visits", customer="no", at="at")
    clients = HostTable("clients", id="no", columns={"city": "town"}, events={"visit": visits})
    predicate = compile(RULE)
    assert clients.select(engine, predicate, NOW) == {1}
    with engine.connect() as conn:
        assert set(conn.execute(select_ids(predicate, clients, NOW)).scalars()) == {1}
        table = sa.table("clients", sa.column("no"))
        assert set(conn.execute(sa.select(table.c.no).where(where(predicate, clients, NOW))).scalars()) == {1}
    repository = HostRepository(engine, clients)
    assert repository.select(predicate, NOW) == {1}
    assert repository.count(predicate, NOW) == 1


def test_anything_else_is_refused_with_what_a_rule_is() -> None:
    with pytest.raises(TypeError, match="text, a cohorts AST node or a compiled Predicate"):
        compile(42)  # type: ignore[arg-type]
