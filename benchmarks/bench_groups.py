"""Group membership speed: full refresh, incremental refresh of one changed customer, and a day later.

Usage::

    python benchmarks/bench_groups.py                 # 20,000 customers, 200 groups (a couple of minutes)
    python benchmarks/bench_groups.py --quick         # 2,000 customers, 50 groups
    python benchmarks/bench_groups.py --customers 1000000 --backends memory,sqlite,postgresql

For each backend it reports, in the same run:

- the full refresh (every rule over every customer), in seconds and customers/s, wall and CPU,
  against what a user would write instead, measured in the same run: in memory, hand-written Python
  over plain dicts computing every group's members as sets; on SQL, hand-written ``INSERT ...
  SELECT`` statements filling a memberships table from a typed customers table (loaded untimed).
  Neither keeps origins, history nor the next instants time could change an answer: they are the
  floor, not an equivalent;
- a read right after one customer changed (an attribute; a new event), with no refresh: the
  read catches up on the change log (median of several), in ms, against the issue's goals
  (under 5 ms in memory, under 20 ms on PostgreSQL);
- a read after 10,000 customers changed (goal: under 2 s on PostgreSQL);
- a refresh after moving ``now`` one day ahead, and how many times faster it is than the full refresh.

PostgreSQL runs on a throwaway cluster started like the test suite's (tests/pg.py),
and is skipped with a message when the server binaries are missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.util
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cohorts import Customer, Event
from cohorts.groups import Groups
from cohorts.repository import MemoryRepository

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
CITIES = [f"City {i}" for i in range(40)]
MODELS = ["Escape", "Focus", "F-150", "Mustang", "Civic", "Accord", "Corolla", "Camry", "Rio", "Soul", "Golf", "Jetta"]
STATUSES = ["gold", "silver", "bronze", "lead"]


def customers(count: int, seed: int = 7) -> Iterator[Customer]:
    """Garage customers: a city, a vehicle, a status, and 0-3 repair orders and invoices over two years."""
    rng = random.Random(seed)
    for i in range(count):
        events = []
        for _ in range(rng.randint(0, 3)):
            at = NOW - dt.timedelta(minutes=rng.randint(0, 730 * 24 * 60))
            events.append(Event("repair_order.closed", at))
            events.append(Event("invoice", at, {"total": round(rng.uniform(20, 900), 2)}))
        yield Customer(
            i,
            {
                "city": rng.choice(CITIES),
                "vehicle_model": f"Ford {rng.choice(MODELS)}",
                "vehicle_year": rng.randint(2005, 2026),
                "status": rng.choice(STATUSES),
            },
            events,
        )


def group_rules(count: int) -> list[tuple[str, str]]:
    """``count`` groups: 55% on attributes, 35% on time (repair recency), 10% referring to other groups."""
    rng = random.Random(11)
    rules: list[tuple[str, str]] = []
    n_time = count * 35 // 100
    n_refs = count // 10
    n_attr = count - n_time - n_refs
    for i in range(n_attr):
        match i % 3:
            case 0:
                rule = f'customer.city = "{rng.choice(CITIES)}"'
            case 1:
                model, year = rng.choice(MODELS), rng.randint(2010, 2024)
                rule = f'customer.vehicle_model contains "{model}" AND customer.vehicle_year >= {year}'
            case _:
                rule = f'customer.status = "{rng.choice(STATUSES)}" AND customer.city != "{rng.choice(CITIES)}"'
        rules.append((f"attr {i}", rule))
    for i in range(n_time):
        days = rng.choice([7, 14, 30, 60, 90, 180, 365, 730])
        rule = f"repair_order.closed.last_time < {days} days ago"
        if i % 2:
            rule += f' AND customer.vehicle_model contains "{rng.choice(MODELS)}"'
        rules.append((f"recent {i}", rule))
    for i in range(n_refs):
        a, b = rng.sample(range(n_attr), 2)
        t = rng.randrange(n_time)
        rules.append(
            (
                f"refs {i}",
                f'customer in group "attr {a}" AND customer not in group "recent {t}" OR customer in group "attr {b}"',
            )
        )
    return rules


_ATTR = (
    (re.compile(r'customer\.city = "([^"]+)"$'), "city"),
    (re.compile(r'customer\.vehicle_model contains "([^"]+)" AND customer\.vehicle_year >= (\d+)$'), "model"),
    (re.compile(r'customer\.status = "([^"]+)" AND customer\.city != "([^"]+)"$'), "status"),
    (
        re.compile(
            r'repair_order\.closed\.last_time < (\d+) days ago( AND customer\.vehicle_model contains "([^"]+)")?$'
        ),
        "recent",
    ),
    (
        re.compile(r'customer in group "([^"]+)" AND customer not in group "([^"]+)" OR customer in group "([^"]+)"$'),
        "refs",
    ),
)


def _template(rule: str) -> tuple[str, tuple[str, ...]]:
    for pattern, kind in _ATTR:
        found = pattern.match(rule)
        if found:
            return kind, found.groups()
    raise ValueError(rule)


def plain_records(n: int) -> list[dict[str, Any]]:
    """The same customers as plain dicts, with the latest repair as a datetime: what a host would hold."""
    out = []
    for c in customers(n):
        repairs = [e.at for e in c.events if e.name == "repair_order.closed"]
        out.append({"id": c.id, **c.attributes, "last_repair": max(repairs) if repairs else None})
    return out


def hand_written_python(records: list[dict[str, Any]], rules: list[tuple[str, str]]) -> dict[str, set[Any]]:
    """Every group's members, as a user would compute them by hand over plain dicts."""
    members: dict[str, set[Any]] = {}
    for name, rule in rules:
        kind, args = _template(rule)
        if kind == "city":
            found = {r["id"] for r in records if r["city"] == args[0]}
        elif kind == "model":
            model, year = args[0].lower(), int(args[1])
            found = {r["id"] for r in records if model in r["vehicle_model"].lower() and r["vehicle_year"] >= year}
        elif kind == "status":
            found = {r["id"] for r in records if r["status"] == args[0] and r["city"] != args[1]}
        elif kind == "recent":  # "< 30 days ago": less than 30 days ago, so after the cutoff
            cutoff, model = NOW - dt.timedelta(days=int(args[0])), (args[2] or "").lower()
            found = {
                r["id"]
                for r in records
                if r["last_repair"] is not None and r["last_repair"] > cutoff and model in r["vehicle_model"].lower()
            }
        else:
            found = (members[args[0]] - members[args[1]]) | members[args[2]]
        members[name] = found
    return members


def hand_written_sql(engine: Any, records: list[dict[str, Any]], rules: list[tuple[str, str]]) -> float:
    """Seconds to fill a memberships table with hand-written SQL over a typed customers table (loaded
    untimed with one executemany): the floor a refresh in the database can be compared with."""
    import sqlalchemy as sa

    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS bench_typed")
        conn.exec_driver_sql("DROP TABLE IF EXISTS bench_members")
        conn.exec_driver_sql(
            "CREATE TABLE bench_typed (id INTEGER PRIMARY KEY, city TEXT, model TEXT, year INTEGER,"
            " status TEXT, last_repair BIGINT)"
        )
        conn.exec_driver_sql(
            "CREATE TABLE bench_members (group_id INTEGER, customer INTEGER, PRIMARY KEY (group_id, customer))"
        )
        micro = dt.timedelta(microseconds=1)
        rows = [
            {
                "id": r["id"],
                "city": r["city"],
                "model": r["vehicle_model"].lower(),
                "year": r["vehicle_year"],
                "status": r["status"],
                "last": None if r["last_repair"] is None else (r["last_repair"] - epoch) // micro,
            }
            for r in records
        ]
        conn.execute(sa.text("INSERT INTO bench_typed VALUES (:id, :city, :model, :year, :status, :last)"), rows)
    ids = {name: i for i, (name, _) in enumerate(rules)}
    start = time.perf_counter()
    with engine.begin() as conn:
        for name, rule in rules:
            kind, args = _template(rule)
            g = ids[name]
            head = f"INSERT INTO bench_members SELECT {g}, id FROM bench_typed WHERE "
            if kind == "city":
                conn.execute(sa.text(head + "city = :a"), {"a": args[0]})
            elif kind == "model":
                params = {"m": f"%{args[0].lower()}%", "y": int(args[1])}
                conn.execute(sa.text(head + "model LIKE :m AND year >= :y"), params)
            elif kind == "status":
                conn.execute(sa.text(head + "status = :s AND city <> :c"), {"s": args[0], "c": args[1]})
            elif kind == "recent":
                cutoff = (NOW - dt.timedelta(days=int(args[0])) - epoch) // dt.timedelta(microseconds=1)
                params = {"t": cutoff, "m": f"%{(args[2] or '').lower()}%"}
                conn.execute(sa.text(head + "last_repair > :t AND model LIKE :m"), params)
            else:
                a, t, b = (ids[x] for x in args)
                conn.exec_driver_sql(
                    f"INSERT INTO bench_members SELECT {g}, customer FROM bench_members WHERE group_id = {a}"
                    f" AND customer NOT IN (SELECT customer FROM bench_members WHERE group_id = {t})"
                    f" UNION SELECT {g}, customer FROM bench_members WHERE group_id = {b}"
                )
    return time.perf_counter() - start


def _load_pg() -> Any:
    path = Path(__file__).resolve().parent.parent / "tests" / "pg.py"
    spec = importlib.util.spec_from_file_location("cohorts_bench_pg", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def run(backend: str, repo: Any, n: int, rules: list[tuple[str, str]], repeats: int) -> dict[str, float]:
    """Measure one backend; returns the timings."""
    load_s, _ = _timed(lambda: repo.upsert(customers(n)))
    groups = Groups(repo)
    for name, rule in rules:
        groups.create(name, rule)
    records = plain_records(n)
    if backend == "memory":
        cpu = time.process_time()
        base_s, expected = _timed(lambda: hand_written_python(records, rules))
        base_cpu = time.process_time() - cpu
        label = "hand-written Python over plain dicts"
    else:
        cpu = time.process_time()
        base_s = hand_written_sql(repo.engine, records, rules)
        base_cpu = time.process_time() - cpu
        expected = None
        label = "hand-written SQL over a typed table"
    cpu = time.process_time()
    full_s, changes = _timed(lambda: groups.refresh(NOW))
    full_cpu = time.process_time() - cpu
    if expected is not None:
        assert {name: set(groups.members(name, NOW)) for name, _ in rules} == expected
    print(
        f"{backend:>10}: full refresh {full_s:.2f} s ({full_cpu:.2f} s CPU) against {label} {base_s:.2f} s"
        f" ({base_cpu:.2f} s CPU): {full_s / base_s:.1f}x",
        flush=True,
    )
    gc.collect()
    gc.freeze()  # a long-running host does this after loading: millions of long-lived objects, no GC pauses
    joins = sum(1 for c in changes if c.joined)
    again_s, none = _timed(lambda: groups.refresh(NOW))
    assert none == [], "a second refresh at the same now must change nothing"

    rng = random.Random(3)
    incremental = []
    for _ in range(repeats):
        cid = rng.randrange(n)
        customer = repo.get(cid)
        assert customer is not None
        repo.upsert([customer.with_attributes(city=rng.choice(CITIES))])
        # No refresh: the next read catches up on the change log (here: the changed customer's groups).
        seconds, _ = _timed(lambda cid=cid: groups.groups_of(cid, NOW))
        incremental.append(seconds)
    event_times = []
    for _ in range(repeats):
        cid = rng.randrange(n)
        repo.add_events(cid, [Event("repair_order.closed", NOW - dt.timedelta(hours=1))])
        seconds, _ = _timed(lambda cid=cid: groups.groups_of(cid, NOW))
        event_times.append(seconds)
    changed = min(10_000, n // 2)
    batch = [c.with_attributes(city=rng.choice(CITIES)) for c in repo.get_many(rng.sample(range(n), changed)).values()]
    repo.upsert(batch)
    bulk_s, _ = _timed(lambda: groups.groups_of(batch[0].id, NOW))
    day_s, day_changes = _timed(lambda: groups.refresh(NOW + dt.timedelta(days=1)))
    gc.unfreeze()
    inc_ms = statistics.median(incremental) * 1000
    ev_ms = statistics.median(event_times) * 1000
    inc_min, ev_min = min(incremental) * 1000, min(event_times) * 1000
    print(
        f"{backend:>10}: load {n / load_s:>9,.0f} customers/s | full refresh {full_s:7.2f} s "
        f"({n / full_s:,.0f} customers/s, {joins:,} joins; no-op refresh {again_s * 1000:.1f} ms) | "
        f"one customer changed: attribute {inc_ms:.2f} ms (min {inc_min:.2f}), "
        f"new event {ev_ms:.2f} ms (min {ev_min:.2f}) (median of {repeats}; a read, no refresh) | "
        f"catching up after {changed:,} changed: {bulk_s:.2f} s | "
        f"+1 day: {day_s:.3f} s, {len(day_changes):,} changes, {full_s / day_s:,.0f}x faster than the full refresh",
        flush=True,
    )
    return {"full": full_s, "incremental_ms": inc_ms, "event_ms": ev_ms, "day": day_s, "bulk": bulk_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20_000, help="number of customers (issue: 1,000,000)")
    parser.add_argument("--groups", type=int, default=200, help="number of groups (issue: 200)")
    parser.add_argument("--backends", default="memory,sqlite,postgresql")
    parser.add_argument("--repeats", type=int, default=15, help="incremental refreshes measured")
    parser.add_argument("--quick", action="store_true", help="2,000 customers and 50 groups")
    args = parser.parse_args(argv)
    if args.quick:
        args.customers, args.groups, args.repeats = 2_000, 50, 5
    rules = group_rules(args.groups)
    print(f"{args.customers:,} customers, {len(rules)} groups", flush=True)
    results = {}
    for backend in args.backends.split(","):
        match backend.strip():
            case "memory":
                results["memory"] = run("memory", MemoryRepository(), args.customers, rules, args.repeats)
            case "sqlite":
                from cohorts.sql import SQLRepository

                with tempfile.TemporaryDirectory() as folder:
                    repo = SQLRepository(f"sqlite:///{folder}/bench.db")
                    results["sqlite"] = run("sqlite", repo, args.customers, rules, args.repeats)
                    repo.engine.dispose()
            case "postgresql":
                pg = _load_pg()
                try:
                    cluster = pg.Cluster.start()
                except Exception as error:
                    print(f"postgresql: skipped ({error})")
                    continue
                try:
                    from cohorts.sql import SQLRepository

                    repo = SQLRepository(cluster.url)
                    results["postgresql"] = run("postgresql", repo, args.customers, rules, args.repeats)
                    repo.engine.dispose()
                finally:
                    cluster.stop()
            case other:
                print(f"unknown backend {other!r}", file=sys.stderr)
                return 2
    goals = {"memory": 5.0, "postgresql": 20.0}
    for backend, goal in goals.items():
        if backend in results:
            got = results[backend]["incremental_ms"]
            verdict = "meets" if got < goal else "misses"
            print(f"read after one change, goal on {backend}: under {goal:g} ms; measured {got:.2f} ms ({verdict} it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
