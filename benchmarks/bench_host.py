"""Rules over the host's own tables on PostgreSQL, against cohorts' own tables and hand-written SQL.

Run: ``python benchmarks/bench_host.py [--customers 1000000] [--changes 10000] [--postgres-url URL]``
(``--quick``: 20,000 customers and 2,000 changes).

Issue #13's goals, measured in one run on one throwaway PostgreSQL cluster (tests/pg.py):

- a rule over host tables (``HostRepository.select``) within 1.5x of the same rule over cohorts'
  own tables (``SQLRepository.select``, the same customers loaded with ``upsert``);
- groups catching up after 10,000 host rows changed in under 2 s, with ``updated_at``
  watermarks and with the triggers cohorts installs.

The host's schema is what a dealership system has: ``clients`` (typed columns and a
``modified_at`` counter its application bumps on every write) and ``repair_orders`` and
``appointments`` tables, loaded with COPY and indexed as docs/repositories.md advises. The third
figure of each rule is the SQL a developer would write by hand over those typed tables (ILIKE for
``contains``): what cohorts costs over writing the query yourself. Every query's ids are checked
equal. Times are medians of ``--repeat`` runs, wall and CPU (``time.process_time``: this
process's, so mostly the driver's; the server's time is in the wall figure).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cohorts import Customer, Event, Groups, HostEvents, HostRepository, HostTable
from cohorts.sql import SQLRepository

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
CITIES = ["Laval", "Montréal", "Québec", "Gatineau", "Sherbrooke", "Longueuil", "Ottawa", "Toronto"]
MAKES = ["Ford", "Honda", "Toyota", "Tesla", "Nissan"]
MODELS = ["Escape", "F-150", "Civic", "Corolla", "Model 3", "Rogue", "CR-V", "Mustang", "Explorer", "RAV4"]

RULES: dict[str, tuple[str, str]] = {
    "example rule": (
        'repair_order.closed.last_time < 730 days ago AND customer.vehicle_model contains "Escape"',
        "SELECT c.client_no FROM clients c WHERE c.vehicle_model ILIKE '%%escape%%' AND EXISTS ("
        " SELECT 1 FROM repair_orders r WHERE r.client_no = c.client_no AND r.status = 'closed'"
        " AND r.closed_at > %(now)s - interval '730 days')",
    ),
    "6-condition rule": (
        'customer.vehicle_year >= 2015 AND customer.status = "active" AND customer.subscribed = true'
        ' AND customer.city in ["Laval", "Montréal", "Québec"] AND appointment.count >= 1'
        ' AND customer.vehicle_make != "Tesla"',
        "SELECT c.client_no FROM clients c WHERE c.vehicle_year >= 2015 AND lower(c.status) = 'active'"
        " AND c.subscribed AND c.city IN ('Laval', 'Montréal', 'Québec') AND lower(c.vehicle_make) <> 'tesla'"
        " AND EXISTS (SELECT 1 FROM appointments a WHERE a.client_no = c.client_no)",
    ),
    "count in a window": (
        "repair_order.closed.count(last 365 days) >= 2",
        "SELECT r.client_no FROM repair_orders r WHERE r.status = 'closed'"
        " AND r.closed_at >= %(now)s - interval '365 days' AND r.closed_at <= %(now)s"
        " GROUP BY r.client_no HAVING count(*) >= 2",
    ),
    "two values compared": (
        "appointment.last_time > repair_order.closed.last_time",
        "SELECT c.client_no FROM clients c WHERE (SELECT max(a.at) FROM appointments a"
        " WHERE a.client_no = c.client_no) > (SELECT max(r.closed_at) FROM repair_orders r"
        " WHERE r.client_no = c.client_no AND r.status = 'closed')",
    ),
    "not followed by": (
        "repair_order.closed.count(not followed by appointment within 30 days) >= 1",
        "SELECT DISTINCT r.client_no FROM repair_orders r WHERE r.status = 'closed' AND NOT EXISTS ("
        " SELECT 1 FROM appointments a WHERE a.client_no = r.client_no AND a.at > r.closed_at"
        " AND a.at <= r.closed_at + interval '30 days')",
    ),
}


def rows(n: int, seed: int = 13) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """``n`` clients (the typed row, its repair orders, its appointments), deterministic."""
    rng = random.Random(seed)
    naive_now = NOW.replace(tzinfo=None)
    for i in range(1, n + 1):
        make = rng.choice(MAKES)
        client = (
            i,
            rng.choice(["Julie", "Marc", "Kevin", "Sophie", "Amir", "Élodie"]),
            f"{make} {rng.choice(MODELS)}",
            make,
            rng.randrange(2000, 2027),
            rng.choice(["active", "active", "Inactive"]),
            rng.random() < 0.9,
            rng.choice(CITIES),
            f"H{rng.randrange(10)}{chr(65 + rng.randrange(26))} {rng.randrange(10)}A{rng.randrange(10)}",
        )
        orders = [
            (
                i,
                rng.choice(["closed", "closed", "open"]),
                naive_now - dt.timedelta(days=rng.randrange(0, 1500), minutes=rng.randrange(1440)),
                Decimal(rng.randrange(2000, 200000)) / 100,
            )
            for _ in range(rng.randrange(0, 5))
        ]
        visits = [(i, naive_now - dt.timedelta(days=rng.randrange(0, 900))) for _ in range(rng.randrange(0, 3))]
        yield client, orders, visits


def as_customer(client: tuple[Any, ...], orders: list[tuple[Any, ...]], visits: list[tuple[Any, ...]]) -> Customer:
    """The same client as cohorts' own tables hold it."""
    names = ("first_name", "vehicle_model", "vehicle_make", "vehicle_year", "status", "subscribed", "city")
    attributes = dict(zip((*names, "postal_code"), client[1:], strict=True))
    events = [Event("repair_order." + status, at, {"total": total}) for _, status, at, total in orders]
    events += [Event("appointment", at, {}) for _, at in visits]
    return Customer(client[0], attributes, events)


HOST_DDL = """
CREATE TABLE clients (client_no bigint PRIMARY KEY, first_name text, vehicle_model text, vehicle_make text,
  vehicle_year integer, status text, subscribed boolean, city text, postal_code text,
  modified_at bigint NOT NULL DEFAULT 0);
CREATE TABLE repair_orders (id bigserial PRIMARY KEY, client_no bigint NOT NULL, status text NOT NULL,
  closed_at timestamptz, total numeric(12, 2), modified_at bigint NOT NULL DEFAULT 0);
CREATE TABLE appointments (id bigserial PRIMARY KEY, client_no bigint NOT NULL, at timestamptz,
  modified_at bigint NOT NULL DEFAULT 0);
CREATE SEQUENCE host_writes;
"""
HOST_INDEXES = """
CREATE INDEX ON repair_orders (client_no, status, closed_at);
CREATE INDEX ON appointments (client_no, at);
CREATE INDEX ON clients (modified_at);
CREATE INDEX ON repair_orders (modified_at);
CREATE INDEX ON appointments (modified_at);
"""


def host_table(*, watermarks: bool) -> HostTable:
    """The mapping of the host's tables; with or without the ``modified_at`` watermarks."""
    stamp = "modified_at" if watermarks else None
    columns = {name: name for name in ("first_name", "vehicle_model", "vehicle_make", "vehicle_year", "status",
                                       "subscribed", "city", "postal_code")}
    events = {
        f"repair_order.{status}": HostEvents("repair_orders", customer="client_no", at="closed_at",
                                             where={"status": status}, fields={"total": "total"}, updated_at=stamp)
        for status in ("closed", "open")
    }
    events["appointment"] = HostEvents("appointments", customer="client_no", at="at", updated_at=stamp)
    return HostTable("clients", id="client_no", columns=columns, events=events, updated_at=stamp)


def load_host(engine: sa.Engine, n: int) -> tuple[float, list[Customer]]:
    """COPY ``n`` clients into the host's tables; the seconds and the same customers as objects."""
    customers = []
    start = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql(HOST_DDL)
        cursor = conn.connection.cursor()  # psycopg's COPY, as a host loads its own data
        with (
            cursor.copy("COPY clients (client_no, first_name, vehicle_model, vehicle_make, vehicle_year, status,"
                        " subscribed, city, postal_code) FROM STDIN") as clients,
        ):
            orders: list[tuple[Any, ...]] = []
            visits: list[tuple[Any, ...]] = []
            for client, its_orders, its_visits in rows(n):
                clients.write_row(client)
                orders += its_orders
                visits += its_visits
                customers.append(as_customer(client, its_orders, its_visits))
        utc = [(c, s, at.replace(tzinfo=dt.UTC), t) for c, s, at, t in orders]
        with cursor.copy("COPY repair_orders (client_no, status, closed_at, total) FROM STDIN") as copy:
            for row in utc:
                copy.write_row(row)
        with cursor.copy("COPY appointments (client_no, at) FROM STDIN") as copy:
            for client_no, at in visits:
                copy.write_row((client_no, at.replace(tzinfo=dt.UTC)))
        # every row a distinct stamp, as an application bumping a sequence on each write does
        conn.exec_driver_sql("UPDATE clients SET modified_at = nextval('host_writes')")
        conn.exec_driver_sql("UPDATE repair_orders SET modified_at = nextval('host_writes')")
        conn.exec_driver_sql("UPDATE appointments SET modified_at = nextval('host_writes')")
        conn.exec_driver_sql(HOST_INDEXES)
    return time.perf_counter() - start, customers


def vacuum(engine: sa.Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")


def medians(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """The median wall and CPU seconds of ``repeat`` runs of ``fn`` (after one warm-up), and its result."""
    result = fn()
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def hand_written(engine: sa.Engine, sql: str) -> Callable[[], set[Any]]:
    def run() -> set[Any]:
        with engine.connect() as conn:
            return {row[0] for row in conn.exec_driver_sql(sql, {"now": NOW})}

    return run


def change_host_rows(engine: sa.Engine, count: int, seed: int, *, stamp: bool) -> set[int]:
    """The host's application edits ``count`` rows: models of clients, new closed repair orders (half each)."""
    rng = random.Random(seed)
    with engine.connect() as conn:
        top = conn.exec_driver_sql("SELECT max(client_no) FROM clients").scalar_one()
    edited = rng.sample(range(1, top + 1), count // 2)
    ordered = rng.sample(range(1, top + 1), count - count // 2)
    bump = ", modified_at = nextval('host_writes')" if stamp else ""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"UPDATE clients SET vehicle_model = 'Ford Escape'{bump} WHERE client_no = ANY(%(ids)s)",
            {"ids": edited},
        )
        conn.exec_driver_sql(
            "INSERT INTO repair_orders (client_no, status, closed_at, total, modified_at)"
            " SELECT u, 'closed', %(at)s, 99.5, CASE WHEN %(stamp)s THEN nextval('host_writes') ELSE 0 END"
            " FROM unnest(%(ids)s::bigint[]) AS u",
            {"ids": ordered, "at": NOW - dt.timedelta(days=3), "stamp": stamp},
        )
    return set(edited) | set(ordered)


def catch_up(engine: sa.Engine, repository: HostRepository, changes: int, seed: int, *, stamp: bool) -> None:
    """Time the first read of a group after ``changes`` host rows were written; check it against a full query."""
    groups = Groups(repository)
    name = f"escape owners {seed}"
    rule = RULES["example rule"][0]
    groups.create(name, rule)
    groups.members(name, NOW)  # the group is built and current
    touched = change_host_rows(engine, changes, seed, stamp=stamp)
    wall, cpu = time.perf_counter(), time.process_time()
    members = groups.members(name, NOW)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert set(members) == repository.select(rule, NOW), "the group did not follow the host's writes"
    how = "updated_at watermarks" if stamp else "triggers"
    print(f"  catch-up via {how:<22} {changes:>7,} rows ({len(touched):,} customers): "
          f"{wall:6.2f} s wall, {cpu:6.2f} s CPU; {len(members):,} members"
          f" {'(goal: under 2 s)' if changes >= 10_000 else ''}", flush=True)
    groups.delete(name, force=True)


def _postgres(url: str | None) -> tuple[str, Callable[[], None]]:
    if url:
        return url, lambda: None
    spec = importlib.util.spec_from_file_location("cohorts_bench_pg", Path(__file__).parents[1] / "tests" / "pg.py")
    assert spec is not None and spec.loader is not None
    pg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pg)
    cluster = pg.Cluster.start()
    return cluster.url, cluster.stop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000, help="host customers (default 1,000,000)")
    parser.add_argument("--changes", type=int, default=10_000, help="host rows changed before a catch-up")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each query (median)")
    parser.add_argument("--quick", action="store_true", help="20,000 customers, 2,000 changes, 3 runs")
    parser.add_argument("--postgres-url", help="an empty database to use instead of a throwaway cluster")
    args = parser.parse_args(argv)
    n, changes, repeat = (20_000, 2_000, 3) if args.quick else (args.customers, args.changes, args.repeat)
    url, stop = _postgres(args.postgres_url)
    try:
        engine = sa.create_engine(url)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("DROP DATABASE IF EXISTS cohorts_own")
            conn.exec_driver_sql("CREATE DATABASE cohorts_own")
        print(f"host tables benchmark: {n:,} customers on PostgreSQL, now = {NOW.isoformat()}", flush=True)
        seconds, customers = load_host(engine, n)
        events = sum(len(c.events) for c in customers)
        print(f"load host tables (COPY)          {n:,} clients, {events:,} events in {seconds:.1f} s", flush=True)
        own = SQLRepository(sa.engine.make_url(url).set(database="cohorts_own"))
        start = time.perf_counter()
        own.upsert(iter(customers))
        print(f"load cohorts' own tables (upsert) in {time.perf_counter() - start:.1f} s", flush=True)
        del customers
        vacuum(engine)
        vacuum(own.engine)
        host = HostRepository(engine, host_table(watermarks=True))

        print("\nselect (median wall / CPU seconds)")
        worst = 0.0
        for label, (rule, sql) in RULES.items():
            print(f"  {label}: {rule}")
            host_wall, host_cpu, host_ids = medians(lambda r=rule: host.select(r, NOW), repeat)  # type: ignore[misc]
            own_wall, own_cpu, own_ids = medians(lambda r=rule: own.select(r, NOW), repeat)  # type: ignore[misc]
            hand_wall, hand_cpu, hand_ids = medians(hand_written(engine, sql), repeat)
            assert host_ids == own_ids == hand_ids, f"{label}: the three queries disagree"
            for name, wall, cpu in (("host tables", host_wall, host_cpu), ("own tables", own_wall, own_cpu),
                                    ("hand-written SQL", hand_wall, hand_cpu)):
                print(f"    {name:<18} {wall:8.3f} s  {cpu:7.3f} s CPU  {len(host_ids):>9,} ids")
            worst = max(worst, host_wall / own_wall)
            print(f"    host / own tables: {host_wall / own_wall:.2f}x (goal: 1.5x or less); "
                  f"host / hand-written: {host_wall / hand_wall:.2f}x", flush=True)
        print(f"  worst host / own tables: {worst:.2f}x")

        print("\ncatching up after host writes")
        catch_up(engine, host, changes, seed=1, stamp=True)
        triggered = HostRepository(engine, host_table(watermarks=False), state_prefix="trig_")
        triggered.install_triggers()
        catch_up(engine, triggered, changes, seed=2, stamp=False)
        triggered.remove_triggers()
        own.engine.dispose()
        engine.dispose()
    finally:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
