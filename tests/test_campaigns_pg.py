"""Real processes running the campaign job against one database (PostgreSQL, SQLite): at once, and killed mid-run.

The test starts this file as a script (``python test_campaigns_pg.py worker ...``): each worker opens the
repository, waits for the start signal, runs the job with handlers that append one line per execution to a
shared log, and prints its RunReport as JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

NOW = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)
CUSTOMERS = 150


def worker(url: str, schema: str, log: str, go: str, pause: float) -> None:
    """Run the job once, logging every handler execution as 'pid customer action key'."""
    import sqlalchemy as sa

    from cohorts.campaigns import Action, Campaign, current_run, run_campaigns
    from cohorts.model import Customer
    from cohorts.sql import SQLRepository

    options = {"connect_args": {"options": f"-csearch_path={schema}"}} if schema != "-" else {}
    engine = sa.create_engine(url, **options)
    repo = SQLRepository(engine)
    Path(f"{log}.ready.{os.getpid()}").touch()
    while not os.path.exists(go):
        time.sleep(0.002)

    def handler(customer: Customer, action: Action, campaign: Campaign) -> None:
        ctx = current_run()
        assert ctx is not None
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{os.getpid()} {customer.id} {ctx.action_key} {ctx.idempotency_key}\n")
        time.sleep(pause)

    campaign = Campaign("pg", actions=[Action("email"), Action("track")])
    report = run_campaigns([campaign], repo, None, {"email": handler, "track": handler}, NOW)
    print(report.to_json(indent=None))
    engine.dispose()


def start(url: str, schema: str, log: Path, go: Path, pause: float) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "worker", url, schema, str(log), str(go), str(pause)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def executions(log: Path) -> list[tuple[int, int, str, str]]:
    rows = []
    for line in log.read_text(encoding="utf-8").splitlines():
        pid, customer, action, key = line.split(" ")
        rows.append((int(pid), int(customer), action, key))
    return rows


@pytest.fixture
def database(postgres_engine: Any, postgres_url: str) -> tuple[str, str]:
    """The URL and schema of a fresh PostgreSQL schema holding CUSTOMERS customers."""
    from cohorts.model import Customer
    from cohorts.sql import SQLRepository

    with postgres_engine.connect() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
    SQLRepository(postgres_engine).upsert(Customer(i, {"email": f"c{i}@example.com"}) for i in range(CUSTOMERS))
    return postgres_url, schema


@pytest.fixture
def sqlite_database(tmp_path: Path) -> tuple[str, str]:
    """The URL of a SQLite file holding CUSTOMERS customers (no schema: "-")."""
    from cohorts.model import Customer
    from cohorts.sql import SQLRepository

    url = f"sqlite:///{tmp_path / 'customers.db'}"
    repo = SQLRepository(url)
    repo.upsert(Customer(i, {"email": f"c{i}@example.com"}) for i in range(CUSTOMERS))
    repo.engine.dispose()
    return url, "-"


@pytest.mark.postgres
def test_two_processes_at_once_run_each_action_once(database: tuple[str, str], tmp_path: Path) -> None:
    """Two runners started together on one PostgreSQL database execute every action exactly once in total."""
    check_two_at_once(database, tmp_path, both_work=True)


def test_two_processes_at_once_on_sqlite(sqlite_database: tuple[str, str], tmp_path: Path) -> None:
    """The same on one SQLite file: nothing runs twice."""
    check_two_at_once(sqlite_database, tmp_path, both_work=False)  # SQLite's lock may favour one runner


def check_two_at_once(database: tuple[str, str], tmp_path: Path, both_work: bool) -> None:
    url, schema = database
    log, go = tmp_path / "log", tmp_path / "go"
    log.touch()
    runners = [start(url, schema, log, go, 0.002) for _ in range(2)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("log.ready.*"))) < 2:  # both are connected and waiting
        assert all(r.poll() is None for r in runners) and time.monotonic() < deadline, "a worker did not start"
        time.sleep(0.01)
    go.touch()
    reports = []
    for runner in runners:
        out, err = runner.communicate(timeout=300)
        assert runner.returncode == 0, err
        reports.append(json.loads(out)["campaigns"][0])
    done = Counter((customer, action) for _, customer, action, _ in executions(log))
    expected = {(i, a) for i in range(CUSTOMERS) for a in ("email-1", "track-1")}
    assert set(done) == expected
    assert set(done.values()) == {1}
    assert sum(r["done"] for r in reports) == 2 * CUSTOMERS
    assert sum(r["added"] for r in reports) == CUSTOMERS  # each customer enrolled by one runner only
    if both_work:  # with row locks they really run side by side
        assert all(r["done"] > 0 for r in reports)


@pytest.mark.postgres
def test_killed_process_loses_nothing_and_repeats_at_most_the_message_in_flight(
    database: tuple[str, str], tmp_path: Path
) -> None:
    """SIGKILL mid-run: the next run finishes the job; only the action in flight may run again, with its key."""
    check_killed(database, tmp_path)


def test_killed_process_on_sqlite(sqlite_database: tuple[str, str], tmp_path: Path) -> None:
    """The same on a SQLite file, where the row in flight is marked running by the dead process: the
    next run sees that its claimant is gone and takes the row at once."""
    check_killed(sqlite_database, tmp_path)


def check_killed(database: tuple[str, str], tmp_path: Path) -> None:
    url, schema = database
    log, go = tmp_path / "log", tmp_path / "go"
    log.touch()
    go.touch()
    victim = start(url, schema, log, go, 0.02)
    deadline = time.monotonic() + 120
    while len(log.read_text(encoding="utf-8").splitlines()) < 25:
        assert victim.poll() is None and time.monotonic() < deadline, "the worker ended before it could be killed"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    before = len(executions(log))
    assert before < 2 * CUSTOMERS
    survivor = start(url, schema, log, go, 0.0)
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    report = json.loads(out)["campaigns"][0]
    rows = executions(log)
    done = Counter((customer, action) for _, customer, action, _ in rows)
    assert set(done) == {(i, a) for i in range(CUSTOMERS) for a in ("email-1", "track-1")}
    repeated = [key for key, n in done.items() if n > 1]
    assert len(repeated) <= 1 and all(n <= 2 for n in done.values())
    keys = {(customer, action): {k for _, c, a, k in rows if (c, a) == (customer, action)} for customer, action in done}
    assert all(len(k) == 1 for k in keys.values())  # a repeat carries the same idempotency key
    assert report["added"] == 0 and report["done"] == 2 * CUSTOMERS - before + len(repeated)


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "worker":
    worker(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6]))
