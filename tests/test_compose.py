"""Rules composed into the host's own SQLAlchemy queries, with HostTable mapped from ORM classes.

``cohorts.where`` must select exactly what ``HostTable.select`` selects, inside the host's
statements (ordered, paginated, joined, two rules at once), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from cohorts import HostEvents, HostRepository, HostTable, JsonField, RuleError, select_ids, where
from cohorts.sql import install_functions

sa = pytest.importorskip("sqlalchemy")
orm = pytest.importorskip("sqlalchemy.orm")

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)


class Base(orm.DeclarativeBase):
    pass


class Client(Base):
    __tablename__ = "crm_clients"
    client_no: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.Text)
    town: orm.Mapped[str | None] = orm.mapped_column("town_name", sa.Text)
    extra: orm.Mapped[Any] = orm.mapped_column(sa.JSON)


class RepairOrder(Base):
    __tablename__ = "crm_repair_orders"
    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True)
    client_no: orm.Mapped[int] = orm.mapped_column(sa.Integer)
    status: orm.Mapped[str] = orm.mapped_column(sa.Text)
    closed_at: orm.Mapped[dt.datetime] = orm.mapped_column(sa.DateTime(timezone=True))


CLIENTS = HostTable(
    Client,
    id=Client.client_no,
    columns={"city": Client.town, "name": Client.name, "tags": JsonField(Client.extra, "tags")},
    events={
        "repair_order.closed": HostEvents(
            RepairOrder, customer=RepairOrder.client_no, at=RepairOrder.closed_at, where={RepairOrder.status: "closed"}
        )
    },
)
TOWNS = ["Laval", "LAVAL", "Lévis", None, "Québec"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def crm(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The host's ORM tables with 30 clients and their repair orders."""
    if request.param == "sqlite":
        engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
        install_functions(engine)
    else:
        engine = request.getfixturevalue("postgres_engine")
    Base.metadata.create_all(engine)
    with orm.Session(engine) as session, session.begin():
        for i in range(1, 31):
            tags = ["VIP"] if i % 4 == 0 else []
            session.add(Client(client_no=i, name=f"Client {31 - i:02d}", town=TOWNS[i % 5], extra={"tags": tags}))
            for k in range(i % 3):
                closed = NOW - dt.timedelta(days=200 * k + i)
                session.add(RepairOrder(client_no=i, status="closed" if k or i % 2 else "open", closed_at=closed))
    yield engine
    Base.metadata.drop_all(engine)


RULES = [
    'customer.city = "laval"',
    'customer.city in ["laval", "lévis"] and not customer.tags contains "vip"',
    "repair_order.closed.count >= 1 and repair_order.closed.last_time within last 30 days",
    'customer.city is unknown or customer.tags contains "VIP"',
    "repair_order.closed.count(last 365 days) = 0",
]


def _deep(levels: int) -> str:
    rule = 'customer.city = "laval"'
    for level in range(levels):
        joiner = "and" if level % 2 else "or"
        rule = f'({rule}) {joiner} customer.name != "Client {level:02d}"'
    return rule


def test_the_orm_mapping_is_the_named_mapping() -> None:
    named = HostTable(
        "crm_clients",
        id="client_no",
        columns={"city": "town_name", "name": "name", "tags": JsonField("extra", "tags")},
        events={
            "repair_order.closed": HostEvents(
                "crm_repair_orders", customer="client_no", at="closed_at", where={"status": "closed"}
            )
        },
    )
    assert named == CLIENTS
    assert HostTable(Client.__table__, id=Client.__table__.c.client_no, columns={"city": Client.town}).table == (
        "crm_clients"
    )
    with pytest.raises(TypeError, match="ORM mapped class"):
        HostTable(object(), id="id", columns={})  # type: ignore[arg-type]


@pytest.mark.parametrize("rule", [*RULES, _deep(25)])
def test_where_selects_what_select_selects(crm: Any, rule: str) -> None:
    expected = CLIENTS.select(crm, rule, NOW)
    with orm.Session(crm) as session:
        found = {c.client_no for c in session.scalars(sa.select(Client).where(where(rule, CLIENTS, NOW)))}
        assert found == expected
        assert set(session.scalars(select_ids(rule, CLIENTS, NOW))) == expected


def test_pages_orders_and_two_rules_in_one_statement(crm: Any) -> None:
    laval = where('customer.city = "laval"', CLIENTS, NOW)
    repaired = where("repair_order.closed.count >= 1", CLIENTS, NOW)
    expected = CLIENTS.select(crm, 'customer.city = "laval" and repair_order.closed.count >= 1', NOW)
    with orm.Session(crm) as session:
        both = sa.select(Client).where(laval, repaired).order_by(Client.name)
        names = [c.name for c in session.scalars(both)]
        assert names == sorted(names) and len(names) == len(expected) > 2
        pages = [
            [c.client_no for c in session.scalars(both.limit(2).offset(offset))] for offset in range(0, 12, 2)
        ]
        assert [cid for page in pages for cid in page] == [c.client_no for c in session.scalars(both)]
        joined = (
            sa.select(Client.client_no, sa.func.count(RepairOrder.id))
            .join(RepairOrder, RepairOrder.client_no == Client.client_no)
            .where(laval)
            .group_by(Client.client_no)
        )
        assert {cid for cid, _ in session.execute(joined)} <= CLIENTS.select(crm, 'customer.city = "laval"', NOW)


def test_a_host_repository_agrees(crm: Any) -> None:
    repository = HostRepository(crm, CLIENTS)
    for rule in RULES:
        assert repository.select(rule, NOW) == CLIENTS.select(crm, rule, NOW)


def test_a_rule_too_deep_for_one_expression_is_refused_when_made(crm: Any) -> None:
    with pytest.raises(RuleError, match="too deep to compose"):
        where(_deep(60), CLIENTS, NOW)
    assert HostRepository(crm, CLIENTS).count(_deep(60), NOW) == len(CLIENTS.select(crm, _deep(60), NOW))


def test_unmapped_attributes_fail_when_the_expression_is_made() -> None:
    with pytest.raises(RuleError, match=r"customer\.email is not mapped to a column of crm_clients"):
        where('customer.email = "x"', CLIENTS)
    assert str(where('customer.city = "laval"', CLIENTS)) == 'customer.city = "laval"'
