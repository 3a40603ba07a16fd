"""The campaign cron job at scale: an audience of 1,000,000 customers and a no-op action.

Run: ``python benchmarks/bench_campaigns.py [--customers 1000000] [--backend memory sqlite postgresql]``
(``--quick`` is 20,000 customers). For each backend it prints, measured in the same run:

- the first run: time, customers enrolled, and ledger writes per second (an audience row and an action
  row per customer at enrollment, then the action's outcome);
- a rerun with nothing new (same audience, every action done): time, and its cost as a fraction of the
  first run;
- the baseline: evaluating the audience alone, which every run must do, so the rerun's overhead
  over it is what the ledger costs when there is nothing to do.

PostgreSQL runs on a throwaway cluster (tests/pg.py) and is skipped when the server binaries are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cohorts.campaigns import Action, Campaign, audience, run_campaigns
from cohorts.model import Customer
from cohorts.repository import MemoryRepository

NOW = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)


def make_customers(n: int, seed: int = 11) -> Iterator[Customer]:
    rng = random.Random(seed)
    for i in range(n):
        yield Customer(i, {
            "status": "active" if rng.random() < 0.8 else "inactive",
            "subscribed": rng.random() < 0.95,
            "email": f"customer{i}@example.com",
        })


def noop(customer: Customer, action: Action, campaign: Campaign) -> None:
    return None


@contextlib.contextmanager
def open_backend(name: str, n: int) -> Iterator[Any]:
    started = time.perf_counter()
    if name == "memory":
        repo: Any = MemoryRepository(make_customers(n))
        report_load(repo, name, n, started)
        yield repo
        return
    from cohorts.sql import SQLRepository

    if name == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            repo = SQLRepository(f"sqlite:///{folder}/bench.db")
            load(repo, n)
            report_load(repo, name, n, started)
            yield repo
            repo.engine.dispose()
        return
    spec = importlib.util.spec_from_file_location("cohorts_tests_pg", Path(__file__).parent.parent / "tests" / "pg.py")
    assert spec is not None and spec.loader is not None
    pg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pg)
    cluster = pg.Cluster.start()
    try:
        repo = SQLRepository(cluster.url)
        load(repo, n)
        report_load(repo, name, n, started)
        yield repo
        repo.engine.dispose()
    finally:
        cluster.stop()


def load(repo: Any, n: int) -> None:
    batch: list[Customer] = []
    for customer in make_customers(n):
        batch.append(customer)
        if len(batch) == 50_000:
            repo.upsert(batch)
            batch = []
    if batch:
        repo.upsert(batch)


def report_load(repo: Any, name: str, n: int, started: float) -> None:
    print(f"\n[{name}] {n:,} customers loaded in {time.perf_counter() - started:.1f} s")


def bench(name: str, n: int) -> dict[str, float]:
    with open_backend(name, n) as repo:
        campaign = Campaign("Bench", actions=[Action("noop")])
        started, cpu = time.perf_counter(), time.process_time()
        size = len(audience(campaign, repo, None, NOW))
        baseline, baseline_cpu = time.perf_counter() - started, time.process_time() - cpu

        started, cpu = time.perf_counter(), time.process_time()
        first = run_campaigns([campaign], repo, None, {"noop": noop}, NOW)["Bench"]
        first_time, first_cpu = time.perf_counter() - started, time.process_time() - cpu
        assert first.added == size and first.done == size, first

        started, cpu = time.perf_counter(), time.process_time()
        again = run_campaigns([campaign], repo, None, {"noop": noop}, NOW + dt.timedelta(minutes=15))["Bench"]
        rerun_time, rerun_cpu = time.perf_counter() - started, time.process_time() - cpu
        assert again.added == 0 and again.done == 0, again

    writes = 3 * size  # audience row + action row at enrollment, then the outcome
    print("  (wall clock; this process's CPU time in brackets: the machine may be shared)")
    print(f"  audience alone (baseline)   {baseline:8.2f} s [{baseline_cpu:7.2f} s]   {size:,} customers")
    rates = f"{size / first_time:,.0f} actions/s, {writes / first_time:,.0f} ledger writes/s"
    print(f"  first run                   {first_time:8.2f} s [{first_cpu:7.2f} s]   {rates}")
    print(f"  rerun, nothing new          {rerun_time:8.2f} s [{rerun_cpu:7.2f} s]   = {rerun_time / first_time:.3f} x "
          f"the first run, {rerun_time / baseline:.2f} x the audience alone")
    return {"first": first_time, "rerun": rerun_time, "baseline": baseline}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000, help="audience size (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="20,000 customers")
    parser.add_argument("--backend", nargs="+", choices=("memory", "sqlite", "postgresql"), default=["memory"],
                        help="repositories to measure (default: memory)")
    args = parser.parse_args(argv)
    n = 20_000 if args.quick else args.customers
    if n <= 0:
        parser.error("--customers must be positive")
    for name in args.backend:
        try:
            bench(name, n)
        except Exception as error:  # a missing server must not hide the other backends' figures
            if type(error).__name__ != "ClusterUnavailable":
                raise
            print(f"\n[{name}] skipped: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
