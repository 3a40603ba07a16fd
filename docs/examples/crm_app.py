"""A CRM's own Flask application and ORM models, with cohorts' groups and campaigns over its tables.

The CRM keeps its clients and repair orders in its own SQLAlchemy models; nothing is copied
into cohorts. cohorts reads those tables in place (``cohorts.HostRepository``), keeps its own
state (groups, history, campaign ledger) in tables beside them, and writes loyalty points
back only through the CRM's writer. tests/test_crm_app.py drives it with Flask's test client
on SQLite and PostgreSQL; docs/repositories.md explains the parts.

Routes (JSON):

* ``POST /clients`` and ``PATCH /clients/<no>``: the CRM's own writes (a ``modified`` counter
  is the watermark cohorts follows); ``DELETE /clients/<no>`` tells cohorts with ``changed``.
* ``POST /clients/<no>/repair_orders``: a closed repair order.
* ``POST /groups`` with ``{"name", "rule"}``; ``GET /groups/<name>/members?page=&size=``: the
  members as CRM clients, ordered by name, a page at a time, through ``cohorts.where``.
* ``POST /campaigns/run``: the cron's step, giving loyalty points to a group's members once.
* ``GET /report``: customers per group.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flask
import sqlalchemy as sa
from sqlalchemy import orm

import cohorts


class Base(orm.DeclarativeBase):
    pass


class Client(Base):
    """The CRM's client; ``points`` is its loyalty balance, ``modified`` bumped on every write."""

    __tablename__ = "clients"
    client_no: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str]
    town: orm.Mapped[str | None]
    car: orm.Mapped[str | None]
    points: orm.Mapped[int] = orm.mapped_column(default=0)
    opted_out: orm.Mapped[bool] = orm.mapped_column(default=False)
    modified: orm.Mapped[int] = orm.mapped_column(sa.BigInteger, index=True)


class RepairOrder(Base):
    __tablename__ = "repair_orders"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    client_no: orm.Mapped[int] = orm.mapped_column(sa.ForeignKey("clients.client_no", ondelete="CASCADE"))
    closed_at: orm.Mapped[dt.datetime] = orm.mapped_column(sa.DateTime(timezone=True))
    total: orm.Mapped[float]
    modified: orm.Mapped[int] = orm.mapped_column(sa.BigInteger, index=True)
    __table_args__ = (sa.Index("repair_orders_client_closed", "client_no", "closed_at"),)


class LoyaltyEvent(Base):
    """What the loyalty campaign gave, as the CRM records it."""

    __tablename__ = "loyalty_events"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    client_no: orm.Mapped[int]
    at: orm.Mapped[dt.datetime] = orm.mapped_column(sa.DateTime(timezone=True))
    points: orm.Mapped[int]


CLIENTS = cohorts.HostTable(
    Client,
    id=Client.client_no,
    columns={
        "name": Client.name,
        "city": Client.town,
        "vehicle_model": Client.car,
        "points": Client.points,
        "opted_out": Client.opted_out,
    },
    events={
        "repair_order.closed": cohorts.HostEvents(
            RepairOrder,
            customer=RepairOrder.client_no,
            at=RepairOrder.closed_at,
            fields={"total": RepairOrder.total},
            updated_at=RepairOrder.modified,
        ),
        "campaign.points": cohorts.HostEvents(
            LoyaltyEvent, customer=LoyaltyEvent.client_no, at=LoyaltyEvent.at, fields={"points": LoyaltyEvent.points}
        ),
    },
    updated_at=Client.modified,
)

_ticks = itertools.count(1)


def tick() -> int:
    """The next watermark value (a real CRM would use a sequence or a timestamp)."""
    return next(_ticks)


class LoyaltyWriter:
    """The CRM's writer for cohorts: points go to ``clients.points``, campaign events to ``loyalty_events``."""

    def update(self, conn: sa.Connection, customer_id: cohorts.CustomerId, values: Mapping[str, Any]) -> None:
        unknown = set(values) - {"points"}
        if unknown:
            raise cohorts.HostWriteError(f"the CRM lets campaigns change points only, not {sorted(unknown)}")
        conn.execute(
            sa.update(Client).where(Client.client_no == customer_id).values(points=values["points"], modified=tick())
        )

    def add_events(self, conn: sa.Connection, customer_id: cohorts.CustomerId, events: Sequence[cohorts.Event]) -> None:
        rows = [
            {"client_no": customer_id, "at": e.at, "points": int(e.attributes["points"])}
            for e in events
            if e.name == "campaign.points"
        ]
        if rows:
            conn.execute(sa.insert(LoyaltyEvent), rows)

    def insert(self, conn: sa.Connection, customer: cohorts.Customer) -> None:
        raise cohorts.HostWriteError("clients are created in the CRM, not by cohorts")

    def delete(self, conn: sa.Connection, customer_ids: Sequence[cohorts.CustomerId]) -> None:
        raise cohorts.HostWriteError("clients are deleted in the CRM, not by cohorts")


def create_app(engine: sa.Engine, *, clock: Callable[[], dt.datetime] | None = None) -> flask.Flask:
    """The CRM's application over ``engine`` (its tables are created when missing)."""
    Base.metadata.create_all(engine)
    repository = cohorts.HostRepository(engine, CLIENTS, writer=LoyaltyWriter())
    groups = cohorts.Groups(repository)
    app = flask.Flask(__name__)

    def now() -> dt.datetime:
        return clock() if clock is not None else dt.datetime.now(dt.UTC)

    def client_json(client: Client) -> dict[str, Any]:
        return {"client_no": client.client_no, "name": client.name, "town": client.town, "points": client.points}

    @app.errorhandler(cohorts.RuleError)
    def rule_error(error: cohorts.RuleError) -> tuple[dict[str, Any], int]:
        return {"error": {"type": type(error).__name__, "message": str(error)}}, 400

    @app.post("/clients")
    def add_client() -> tuple[dict[str, Any], int]:
        body = flask.request.get_json()
        with orm.Session(engine) as session, session.begin():
            client = Client(**body, modified=tick())
            session.add(client)
            session.flush()
            return client_json(client), 201

    @app.patch("/clients/<int:client_no>")
    def edit_client(client_no: int) -> dict[str, Any]:
        with orm.Session(engine) as session, session.begin():
            client = session.get_one(Client, client_no)
            for name, value in flask.request.get_json().items():
                setattr(client, name, value)
            client.modified = tick()
            return client_json(client)

    @app.delete("/clients/<int:client_no>")
    def delete_client(client_no: int) -> tuple[str, int]:
        with orm.Session(engine) as session, session.begin():
            session.execute(sa.delete(RepairOrder).where(RepairOrder.client_no == client_no))
            session.execute(sa.delete(Client).where(Client.client_no == client_no))
            repository.changed(client_no, connection=session.connection())  # a watermark cannot see a delete
        return "", 204

    @app.post("/clients/<int:client_no>/repair_orders")
    def close_repair_order(client_no: int) -> tuple[dict[str, Any], int]:
        body = flask.request.get_json()
        closed_at = dt.datetime.fromisoformat(body["closed_at"])
        with orm.Session(engine) as session, session.begin():
            session.add(RepairOrder(client_no=client_no, closed_at=closed_at, total=body["total"], modified=tick()))
        return {"client_no": client_no}, 201

    @app.post("/groups")
    def create_group() -> tuple[dict[str, Any], int]:
        body = flask.request.get_json()
        groups.create(body["name"], body["rule"])
        return {"name": body["name"], "count": groups.count(body["name"], now())}, 201

    @app.get("/groups/<name>/members")
    def members(name: str) -> dict[str, Any]:
        page, size = int(flask.request.args.get("page", 1)), int(flask.request.args.get("size", 20))
        definition = groups.definition(name)
        if definition.rule is None:
            flask.abort(400, "this example pages the members of groups defined by a rule")
        # The group's own state is current at every read; the page itself is the CRM's query.
        in_group = cohorts.where(definition.rule, CLIENTS, now(), groups=lambda n: groups.members(n, now()))
        query = sa.select(Client).where(in_group).order_by(Client.name, Client.client_no)
        with orm.Session(engine) as session:
            rows = session.scalars(query.limit(size).offset((page - 1) * size)).all()
            return {"group": name, "count": groups.count(name, now()), "page": page,
                    "clients": [client_json(c) for c in rows]}

    @app.post("/campaigns/run")
    def run() -> dict[str, Any]:
        body = flask.request.get_json()
        moment = now()
        campaign = cohorts.Campaign(
            body["name"],
            group=body["group"],
            start=moment - dt.timedelta(days=1),
            end=moment + dt.timedelta(days=30),
            actions=[cohorts.Action("points", id="bonus", settings={"points": body["points"]})],
        )
        result = cohorts.run_campaigns([campaign], repository, groups, cohorts.standard_handlers(repository), moment)
        report = result[campaign.name]
        return {"done": report.done, "failed": report.failed, "error": report.error}

    @app.get("/report")
    def report() -> dict[str, Any]:
        rows = cohorts.report(groups, now=now())
        return {"rows": [{"group": row["group"], "customers": row["customers"]} for row in rows]}

    return app
