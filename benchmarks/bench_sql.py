"""Bulk load and rule pushdown: SQLite and PostgreSQL against MemoryRepository and fetch-then-filter.

Run: ``python benchmarks/bench_sql.py [--customers 1000000] [--no-postgres] [--postgres-url URL]``.
By default 1,000,000 customers and about 5 events each are generated; PostgreSQL
is a throwaway cluster started from Debian's binaries (tests/pg.py) unless a
URL is given. Prints rows per second of the bulk load (executemany on SQLite,
COPY on PostgreSQL), the time of ``select`` for the reference example rule and
a 6-condition rule on every backend, the baseline of fetching every customer
and filtering in Python, the ratios between them, and the plans of selective
rules (index use).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cohorts
from cohorts import Customer, Event
from cohorts.repository import MemoryRepository
from cohorts.sql import SQLRepository

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
EXAMPLE = 'repair_order.closed.last_time < 730 days ago AND customer.vehicle_model contains "Escape"'
SIX = (
    'customer.vehicle_year >= 2015 AND customer.status = "active" AND customer.subscribed = true'
    ' AND customer.city in ["Laval", "Montréal", "Québec"] AND appointment.count >= 1'
    ' AND customer.vehicle_make != "Tesla"'
)
SELECTIVE = {
    "attribute equality": 'customer.postal_code = "H7T 1A1"',
    "recent events (index on name, at)": "invoice.at within last 2 days",
}
MODELS = ["Escape", "F-150", "Civic", "Corolla", "Model 3", "Rogue", "CR-V", "Mustang", "Explorer", "RAV4"]
MAKES = ["Ford", "Honda", "Toyota", "Tesla", "Nissan"]
CITIES = ["Laval", "Montréal", "Québec", "Gatineau", "Sherbrooke", "Longueuil", "Ottawa", "Toronto"]
EVENTS = ["repair_order.closed", "appointment", "message.sent", "invoice"]


def customers(n: int, seed: int = 7) -> Iterator[Customer]:
    """``n`` customers with about 5 events each (0 to 10), deterministic."""
    rng = random.Random(seed)
    for i in range(n):
        events = [
            Event(
                rng.choice(EVENTS),
                NOW.replace(tzinfo=None) - dt.timedelta(days=rng.randrange(0, 1500), minutes=rng.randrange(1440)),
                {"total": rng.randrange(20, 2000)} if rng.random() < 0.3 else {},
            )
            for _ in range(rng.randrange(0, 11))
        ]
        make = rng.choice(MAKES)
        attributes: dict[str, Any] = {
            "first_name": rng.choice(["Julie", "Marc", "Kevin", "Sophie", "Amir", "Élodie"]),
            "vehicle_model": f"{make} {rng.choice(MODELS)}",
            "vehicle_make": make,
            "vehicle_year": rng.randrange(2000, 2027),
            "status": rng.choice(["active", "active", "Inactive"]),
            "subscribed": rng.random() < 0.9,
            "city": rng.choice(CITIES),
            "postal_code": f"H{rng.randrange(10)}{chr(65 + rng.randrange(26))} {rng.randrange(10)}A{rng.randrange(10)}",
        }
        yield Customer(i if i % 2 else f"c{i}", attributes, events)


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """The best wall time of ``repeat`` runs, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def load(repository: Any, n: int) -> tuple[float, int]:
    """Bulk-load ``n`` customers; returns seconds and the number of rows (customers + events)."""
    rows = 0

    def counted() -> Iterator[Customer]:
        nonlocal rows
        for customer in customers(n):
            rows += 1 + len(customer.events)
            yield customer

    start = time.perf_counter()
    repository.upsert(counted())
    return time.perf_counter() - start, rows


def fetch_and_filter(repository: Any, rule: str) -> set[Any]:
    """The baseline: read every customer with its events out of the database, filter in Python."""
    predicate = cohorts.compile(rule)
    return set(predicate.select(iter(repository), NOW))


def _postgres(url: str | None) -> tuple[str, Callable[[], None]] | None:
    if url:
        return url, lambda: None
    spec = importlib.util.spec_from_file_location("cohorts_bench_pg", Path(__file__).parents[1] / "tests" / "pg.py")
    assert spec is not None and spec.loader is not None
    pg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pg)
    try:
        cluster = pg.Cluster.start()
    except pg.ClusterUnavailable as error:
        print(f"PostgreSQL skipped: {error}")
        return None
    return cluster.url, cluster.stop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000, help="number of customers (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="20,000 customers")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--postgres-url", help="use this server instead of a throwaway cluster")
    parser.add_argument("--no-baseline", action="store_true", help="skip fetch-and-filter (slow at full size)")
    args = parser.parse_args(argv)
    n = 20_000 if args.quick else args.customers
    print(f"cohorts SQL benchmark: {n:,} customers, now = {NOW.isoformat()}", flush=True)

    backends: dict[str, Any] = {}
    cleanups: list[Callable[[], None]] = []
    workdir = Path(tempfile.mkdtemp(prefix="cohorts-bench-"))
    try:
        memory = MemoryRepository()
        seconds, rows = load(memory, n)
        print(f"load   memory      {rows:>11,} rows  {seconds:8.1f} s  {rows / seconds:>10,.0f} rows/s", flush=True)
        backends["memory"] = memory

        sqlite = SQLRepository(workdir / "bench.db")
        seconds, rows = load(sqlite, n)
        print(f"load   sqlite      {rows:>11,} rows  {seconds:8.1f} s  {rows / seconds:>10,.0f} rows/s", flush=True)
        with sqlite.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
        backends["sqlite"] = sqlite

        if not args.no_postgres:
            found = _postgres(args.postgres_url)
            if found is not None:
                url, stop = found
                cleanups.append(stop)
                postgres = SQLRepository(url)
                seconds, rows = load(postgres, n)
                print(
                    f"load   postgresql  {rows:>11,} rows  {seconds:8.1f} s  {rows / seconds:>10,.0f} rows/s (COPY)",
                    flush=True,
                )
                with postgres.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE")
                backends["postgresql"] = postgres

        print()
        for label, rule in (("example rule", EXAMPLE), ("6-condition rule", SIX)):
            print(f"select: {label}: {rule}")
            results: dict[str, tuple[float, set[Any]]] = {}
            for name, repository in backends.items():
                seconds, ids = timed(lambda r=repository, q=rule: r.select(q, NOW))  # type: ignore[misc]
                results[name] = (seconds, ids)
                print(f"  {name:<28} {seconds:8.3f} s  {len(ids):>9,} ids", flush=True)
            if not args.no_baseline:
                for name in ("sqlite", "postgresql"):
                    if name in backends:
                        seconds, ids = timed(lambda r=backends[name], q=rule: fetch_and_filter(r, q), 1)  # type: ignore[misc]
                        results[f"{name} fetch + filter"] = (seconds, ids)
                        print(f"  {name + ' fetch + filter':<28} {seconds:8.3f} s  {len(ids):>9,} ids", flush=True)
            reference = results["memory"][1]
            assert all(ids == reference for _, ids in results.values()), "backends disagree"
            memory_time = results["memory"][0]
            for name in ("sqlite", "postgresql"):
                if name in results:
                    line = f"  ratio {name}: {memory_time / results[name][0]:.2f}x memory's speed"
                    if f"{name} fetch + filter" in results:
                        baseline = results[f"{name} fetch + filter"][0]
                        line += f", {baseline / results[name][0]:.1f}x faster than fetch + filter"
                    print(line)
            print()

        for name in ("sqlite", "postgresql"):
            if name not in backends:
                continue
            for label, rule in SELECTIVE.items():
                seconds, ids = timed(lambda r=backends[name], q=rule: r.select(q, NOW))  # type: ignore[misc]
                plan = backends[name].explain(rule, NOW)
                print(f"{name}: {label}: {rule}: {len(ids)} ids in {seconds * 1000:.1f} ms; plan:")
                print("    " + plan.replace("\n", "\n    "))
        print("\n(select times are the best of 3 runs; fetch + filter runs once)")
    finally:
        for cleanup in cleanups:
            cleanup()
        for path in workdir.glob("*"):
            path.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    sys.exit(main())
